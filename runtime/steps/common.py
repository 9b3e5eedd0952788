"""What several steps share: errors, JSON artifacts, source paths, the split and feature matrices."""

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
INPUT_NAME = "features"
OUTPUT_NAME = "output"


def step_error(message: str, hint: str | None = None, code: str = "step_failed") -> TargetError:
    """A user-facing step failure: one Diagnostic with a message and a hint."""
    return TargetError([Diagnostic(message, hint=hint, stage="target", code=code)])


def need(paths: Mapping[str, Path], name: str, step: str) -> Path:
    """The path of a required input/output artifact, or a clear error naming it."""
    if name not in paths:
        raise step_error(
            f"step {step} needs artifact '{name}'", hint=f"pass --input/--output {name}=PATH"
        )
    return paths[name]


def write_json(path: Path, payload: Any) -> Path:
    """Write canonical JSON (sorted keys), creating parent folders; atomic via rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, sort_keys=True, indent=2, default=str) + "\n")
    tmp.replace(path)
    return path


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


def feature_matrix(plan: Plan, frame: pd.DataFrame) -> np.ndarray:
    """The float32 model input [N, F] from a training-set frame (missing values stay NaN)."""
    import numpy as np

    cols = [frame[r].to_numpy(dtype="float64", na_value=np.nan) for r in feature_refs(plan)]
    return (
        np.stack(cols, axis=1).astype("float32") if cols else np.zeros((len(frame), 0), "float32")
    )


def label_vector(plan: Plan, frame: pd.DataFrame) -> np.ndarray:
    """The label column as int64 (classification) or float32 (regression)."""
    y = frame[plan.features.label.field]
    if plan.training.task == "regression":
        return y.to_numpy(dtype="float32")
    return y.to_numpy(dtype="int64")


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
        )
    return {
        "train": np.sort(order[:n_train]),
        "validation": np.sort(order[n_train : n_train + n_val]),
        "holdout": np.sort(order[n_train + n_val :]),
    }


def read_training_set(path: Path) -> pd.DataFrame:
    """Load the training set parquet written by build_training_set."""
    import pandas as pd

    if not Path(path).exists():
        raise step_error(f"training set not found at {path}", code="missing_artifact")
    return pd.read_parquet(path)
