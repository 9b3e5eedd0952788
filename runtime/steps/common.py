"""What several steps share: errors, JSON artifacts, source paths, the split, raw feature columns
and the label's class mapping."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from specml.compiler.errors import Diagnostic, TargetError
from specml.compiler.ir import DataSource, Plan

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

TIMESTAMP = "event_timestamp"  # the training set's event-time column (Feast's entity_df name)
OUTPUT_NAME = "output"
MODEL_METADATA = "model.json"  # in a model folder, written by TrainedModel.save
LABEL_OUTPUT = "label"  # classification: the class name per row
# An integer categorical's missing value in raw columns (int64 has no NaN); the graph maps it to
# the missing policy.
INT_MISSING = -(2**63)


def step_error(
    message: str,
    hint: str | None = None,
    code: str = "step_failed",
    path: tuple[str | int, ...] = (),
) -> TargetError:
    """A user-facing step failure: one Diagnostic with a message, a hint and, when a spec field
    is the cause, its YAML path."""
    return TargetError([Diagnostic(message, path=path, hint=hint, stage="target", code=code)])


def need(paths: Mapping[str, Path], name: str, step: str) -> Path:
    """The path of a required input/output artifact, or a clear error naming it."""
    if name not in paths:
        raise step_error(
            f"step {step} needs artifact '{name}'", hint=f"pass --input/--output {name}=PATH"
        )
    return paths[name]


def write_json(path: Path, payload: Any) -> Path:
    """Write canonical JSON (sorted keys), creating parent folders; atomic via rename."""
    from specml.runtime.files import write_json_atomic

    return write_json_atomic(path, payload, durable=False)


def read_json(path: Path) -> Any:
    """Read a JSON artifact."""
    return json.loads(Path(path).read_text())


def source_path(source: DataSource, data_dir: Path) -> Path:
    """Where a source's file is: its path as written, relative to the spec's folder."""
    p = Path(source.path)
    return p if p.is_absolute() else Path(data_dir) / p


def read_source(source: DataSource, data_dir: Path) -> pd.DataFrame:
    """Load a source table (parquet or csv), event time parsed as UTC."""
    import pandas as pd

    path = source_path(source, data_dir)
    if not path.exists():
        raise step_error(
            f"data source '{source.id}' not found at {path}",
            hint="write demo data with `specml demo-data SPEC` or fix data.sources."
            f"{source.id}.path",
            code="missing_source",
            path=("data", "sources", source.id, "path"),
        )
    if source.format == "csv":
        df = pd.read_csv(path)
        for col in (source.timestamp_field, source.created_timestamp_field):
            if col and col in df:
                df[col] = pd.to_datetime(df[col], utc=True)
        return df
    return pd.read_parquet(path)


def data_hash(plan: Plan, data_dir: Path) -> str:
    """sha256 over every source file's bytes, in source-id order (missing files hash as absent)."""
    h = hashlib.sha256()
    for source in sorted(plan.features.sources, key=lambda s: s.id):
        path = source_path(source, data_dir)
        h.update(source.id.encode() + b"\0")
        if path.exists():
            with path.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
        else:
            h.update(b"<missing>")
    return "sha256:" + h.hexdigest()


def feature_refs(plan: Plan) -> list[str]:
    """The model's inputs as `view:field`, in the Plan's training order."""
    return [f.ref for f in plan.training.features]


def entity_join_keys(plan: Plan) -> list[str]:
    """Join keys of every entity the model's features use, in first-use order."""
    views = {v.id: v for v in plan.features.views}
    ents = {e.id: e for e in plan.features.entities}
    keys: list[str] = []
    for ref in plan.training.features:
        for key in ents[views[ref.view_id].entity_id].join_keys:
            if key not in keys:
                keys.append(key)
    return keys


def feature_columns(plan: Plan, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The model's raw inputs from a training-set frame: input name -> 1-D column, in Plan order.

    Numeric inputs are float32 (NaN = missing; infinities stay infinite), string categoricals an
    object array of `str` (None = missing), integer categoricals int64 (missing: INT_MISSING).
    """
    return {
        ref.input_name: raw_column(ref.datatype, frame[ref.ref]) for ref in plan.training.features
    }


def raw_column(datatype: str, values: Any) -> np.ndarray:
    """One raw model input column (FP32 / INT64 / BYTES) from a pandas Series or a sequence."""
    import numpy as np
    import pandas as pd

    series = values if isinstance(values, pd.Series) else pd.Series(list(values), dtype=object)
    if datatype == "FP32":
        return series.to_numpy(dtype="float64", na_value=np.nan).astype("float32")
    missing = series.isna().to_numpy()
    if datatype == "INT64":
        filled = series.astype("float64").fillna(float(INT_MISSING)) if missing.any() else series
        out = filled.to_numpy(dtype="float64").astype("int64")
        out[missing] = INT_MISSING
        return out
    out = np.empty(len(series), dtype=object)
    for i, (value, absent) in enumerate(zip(series.tolist(), missing, strict=True)):
        out[i] = None if absent else str(value)
    return out


def label_values(plan: Plan, frame: pd.DataFrame) -> np.ndarray:
    """The raw label column: float32 (regression) or the class values as stored (str/int/bool)."""
    y = frame[plan.features.label.field]
    if plan.training.task == "regression":
        return y.to_numpy(dtype="float32")
    return y.to_numpy()


def class_sort_key(value: str | int) -> tuple[int, Any]:
    """Class order in messages: numbers numerically first, then strings lexically."""
    return (0, value) if isinstance(value, int) else (1, str(value))


def model_classes(plan: Plan, train_labels: np.ndarray) -> tuple[str | int, ...] | None:
    """The model's classes in output order (None for regression): declared, else learned from the
    training split (runtime/encoding.py); binary: the positive class is index 1."""
    if plan.training.task == "regression":
        return None
    from specml.runtime.encoding import learn_classes

    return tuple(learn_classes(plan.training, plan.features.label, train_labels))


def class_indices(
    plan: Plan, labels: np.ndarray, classes: tuple[str | int, ...] | None
) -> np.ndarray:
    """Labels as class indices (int64) per `classes`, or float32 values for regression."""
    import numpy as np

    if classes is None or plan.training.task == "regression":
        return np.asarray(labels, dtype="float32")
    from specml.runtime.encoding import encode_labels

    return encode_labels(labels, classes)


def shown(values: Any, most: int = 8) -> str:
    """A short list of values for a message (at most `most`, then "...")."""
    items = [repr(v) for v in list(values)[:most]]
    return "[" + ", ".join(items) + (", ..." if len(values) > most else "") + "]"


def feature_path(plan: Plan, ref: str) -> tuple[str, ...]:
    """The YAML path of a `view:field` model input (for diagnostics)."""
    view, _, field = ref.partition(":")
    return ("features", "views", view, "fields", field)


def take(columns: Mapping[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
    """The given rows of every raw column."""
    return {name: values[rows] for name, values in columns.items()}


def split_indices(plan: Plan, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Deterministic train/validation/holdout row indices per the Plan's split (time or random)."""
    import numpy as np

    n = len(frame)
    split = plan.training.split
    if split.method == "time":
        order = np.argsort(frame[TIMESTAMP].to_numpy(), kind="stable")
    else:
        order = np.random.default_rng(plan.training.seed).permutation(n)
    n_hold = int(round(n * split.holdout))
    n_val = int(round(n * split.validation))
    n_train = n - n_hold - n_val
    if n_train < 1 or n_hold < 1:
        raise step_error(
            f"the training set has {n} rows: too few to split into train/validation/holdout",
            hint="add data or lower training.split.holdout / validation",
            code="too_few_rows",
            path=("training", "split"),
        )
    return {
        "train": np.sort(order[:n_train]),
        "validation": np.sort(order[n_train : n_train + n_val]),
        "holdout": np.sort(order[n_train + n_val :]),
    }


def model_metadata(folder: Path) -> dict[str, Any]:
    """The metadata the train step saved with a model (run id, classes, feature repo, ...)."""
    path = Path(folder) / MODEL_METADATA
    if not path.exists():
        raise step_error(f"no trained model at {folder}", code="missing_artifact")
    return read_json(path)


def read_training_set(path: Path) -> pd.DataFrame:
    """Load the training set parquet written by build_training_set."""
    import pandas as pd

    if not Path(path).exists():
        raise step_error(f"training set not found at {path}", code="missing_artifact")
    return pd.read_parquet(path)
