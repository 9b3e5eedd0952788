"""Plans for the family tests: a small spec lowered, then its model inputs set per test."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from specml.compiler.api import validate_text
from specml.compiler.ir import Categorical, FeatureRef, Plan
from specml.compiler.lower import lower

SPEC = """
apiVersion: specml/v1
kind: MLSystem
metadata: {{name: families, owner: tests}}
data:
  sources:
    rows: {{format: parquet, path: data/rows.parquet, timestamp: event_ts}}
features:
  entities:
    row: {{join_keys: [row_id], dtype: int64}}
  views:
    v:
      entity: row
      source: rows
      ttl: 30d
      fields: {{{fields}}}
  label: {{source: rows, field: target}}
training:
  task: {task}
  {num_classes}
  model: {{type: {model}, {hidden}}}
  hyperparameters: {{lr: 1.0e-2, epochs: {epochs}, batch_size: 64}}
  split: {{method: random, holdout: 0.2}}
  seed: 3
targets:
  local: {{workdir: .specml/families}}
"""


def categorical(encoding: str = "one_hot", **kw: Any) -> Categorical:
    """A Categorical with the spec defaults, overridden by keywords."""
    values: dict[str, Any] = {
        "encoding": encoding,
        "categories": None,
        "max_categories": 50,
        "min_frequency": 1,
        "unknown": "bucket",
        "missing": "bucket",
        "embedding_dim": 3 if encoding == "embedding" else None,
    }
    return Categorical(**{**values, **kw})


def make_plan(
    task: str,
    inputs: dict[str, tuple[str, Categorical | None]],
    model: str = "mlp",
    classes: tuple | None = None,
    positive: Any = None,
    num_classes: int | None = None,
    epochs: int = 12,
) -> Plan:
    """A Plan whose model inputs are `inputs` (name -> (dtype, categorical)), in that order."""
    fields = ", ".join(f"{name}: float32" for name in inputs)
    multi = task == "multiclass_classification"
    text = SPEC.format(
        fields=fields,
        task=task,
        num_classes=f"num_classes: {num_classes or 3}" if multi else "",
        model=model,
        hidden="hidden: [16, 8]" if model == "mlp" else "",
        epochs=epochs,
    )
    plan = lower(validate_text(text).spec)
    refs = tuple(
        FeatureRef(view_id="v", field=name, dtype=dtype, categorical=cat)  # type: ignore[arg-type]
        for name, (dtype, cat) in inputs.items()
    )
    label = plan.features.label.model_copy(update={"classes": classes, "positive": positive})
    training = plan.training.model_copy(update={"features": refs})
    if multi and num_classes:
        training = training.model_copy(update={"num_classes": num_classes})
    return plan.model_copy(
        update={"training": training, "features": plan.features.model_copy(update={"label": label})}
    )


def columns_of(frame: pd.DataFrame, plan: Plan) -> dict[str, np.ndarray]:
    """Raw columns as the families take them: float32 numbers, object strings, int64 codes."""
    out: dict[str, np.ndarray] = {}
    for f in plan.training.features:
        col = frame[f.input_name]
        if f.datatype == "FP32":
            out[f.input_name] = col.to_numpy(np.float32, na_value=np.nan)
        elif f.datatype == "INT64":
            out[f.input_name] = col.to_numpy(np.int64)
        else:
            out[f.input_name] = col.astype(object).where(col.notna(), None).to_numpy(object)
    return out
