"""The training-time drift reference saved next to the exported model (and found again by monitor).

`write_reference` is called once by the export step: it writes into the ONNX model folder (which
register logs to MLflow and `publish` copies to <workdir>/serving/<slot>/):
- `drift_reference.npz`: feature histograms + KS points (drift.build_reference) of the training rows,
  and category shares (with an unknown bucket) of string features;
- `prediction_reference.npz`: the same over the model's outputs on held-out rows;
- `drift_sample.parquet`: a seeded sample of training rows + predictions (at most SAMPLE_ROWS),
  the reference side of the Evidently HTML report (Evidently needs raw rows, not histograms).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from specml.compiler.ir import Plan
from specml.runtime.monitor.drift import (
    PREDICTION,
    Reference,
    build_reference,
    prediction_reference,
)

FEATURE_REFERENCE = "drift_reference.npz"
PREDICTION_REFERENCE = "prediction_reference.npz"
SAMPLE = "drift_sample.parquet"
SAMPLE_ROWS = 5000


def prediction_columns(predictions: Any) -> list[str]:
    """`prediction`, or `prediction:<k>` per output column."""
    p = np.asarray(predictions)
    return (
        [PREDICTION]
        if p.ndim == 1 or p.shape[1] == 1
        else [f"{PREDICTION}:{k}" for k in range(p.shape[1])]
    )


def write_reference(
    plan: Plan, training_frame: Any, predictions: Any, out_dir: str | Path, seed: int = 0
) -> dict[str, Path]:
    """Save the feature and prediction references (+ an Evidently sample) into out_dir."""
    import pandas as pd

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = [f.ref for f in plan.training.features]
    x = (
        training_frame[names]
        if hasattr(training_frame, "columns")
        else pd.DataFrame(np.asarray(training_frame, dtype=np.float64), columns=names)
    )
    categorical = [f.ref for f in plan.training.features if f.categorical is not None]
    features = build_reference(x, names, categorical=categorical)
    paths = {"features": features.save(out / FEATURE_REFERENCE)}
    p = np.asarray(predictions, dtype=np.float64)
    p2 = p.reshape(len(p), -1)
    paths["predictions"] = prediction_reference(p2).save(out / PREDICTION_REFERENCE)
    rng = np.random.default_rng(seed)
    take = np.sort(rng.choice(len(x), size=min(len(x), SAMPLE_ROWS), replace=False))
    sample = x.iloc[take].reset_index(drop=True)
    numeric = list(features.numeric_names)
    sample[numeric] = sample[numeric].astype("float64")
    p_take = np.sort(rng.choice(len(p2), size=min(len(p2), SAMPLE_ROWS), replace=False))
    preds = pd.DataFrame(p2[p_take], columns=prediction_columns(p2))
    sample = pd.concat([sample, preds.reindex(range(len(sample)))], axis=1)
    paths["sample"] = out / SAMPLE
    sample.to_parquet(paths["sample"], index=False)
    return paths


@dataclass(frozen=True)
class ReferenceSet:
    """What a monitor run compares against, loaded from one model folder."""

    folder: Path
    features: Reference
    predictions: Reference | None
    sample: Any | None  # DataFrame of training rows (+ prediction columns), for Evidently

    @classmethod
    def load(cls, folder: str | Path) -> ReferenceSet:
        """Read the files write_reference wrote (the prediction reference and sample are optional)."""
        folder = Path(folder)
        pred = folder / PREDICTION_REFERENCE
        sample = folder / SAMPLE
        frame = None
        if sample.exists():
            import pandas as pd

            frame = pd.read_parquet(sample)
        return cls(
            folder,
            Reference.load(folder / FEATURE_REFERENCE),
            Reference.load(pred) if pred.exists() else None,
            frame,
        )


def find_reference(workdir: str | Path) -> Path | None:
    """The champion's reference folder: serving/current, else the newest run's export folder."""
    from specml.runtime.layout import Workdir

    wd = Workdir(Path(workdir))
    if (wd.current / FEATURE_REFERENCE).exists():
        return wd.current
    runs = sorted(wd.runs.glob(f"*/export_onnx/*/{FEATURE_REFERENCE}")) if wd.runs.exists() else []
    return runs[-1].parent if runs else None


def write_training_reference(
    plan: Plan, training_set: Any, predictions: Any, out_dir: str | Path
) -> dict[str, Path]:
    """write_reference over the train split of a training set: its parquet path, or the frame
    already read (what export_onnx passes).

    Never fails the export: a reference that cannot be built (e.g. a feature with no value in the
    training split) is logged and skipped; `specml monitor` then says there is no reference.
    """
    import logging

    from specml.runtime.steps.common import read_training_set, split_indices

    frame = (
        training_set if hasattr(training_set, "columns") else read_training_set(Path(training_set))
    )
    rows = frame.iloc[split_indices(plan, frame)["train"]].reset_index(drop=True)
    try:
        return write_reference(plan, rows, predictions, out_dir, seed=plan.training.seed)
    except (ValueError, KeyError) as exc:
        logging.getLogger("specml.monitor").warning("no drift reference written: %s", exc)
        return {}
