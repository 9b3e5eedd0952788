"""The export guard, for every family: the model and its ONNX graph must agree on raw inputs,
including rows with unseen categories and missing values, or the export fails."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from specml.compiler.ir import Plan
from specml.runtime.encoding import as_text, missing_mask
from specml.runtime.families.base import Columns, TrainedModel
from specml.runtime.families.onnx_io import LABEL, OUTPUT, predicted_labels

UNSEEN_STRING = "specml-unseen-category"


def _unseen_string(known: set[str]) -> str:
    value = UNSEEN_STRING
    while value in known:
        value += "~"
    return value


def _unseen_value(model: TrainedModel, name: str, datatype: str, column: np.ndarray) -> Any:
    """A value of this input that neither the vocabulary nor the rows contain."""
    vocab = getattr(model, "vocabularies", {}).get(name)
    known = list(vocab.values) if vocab is not None else []
    present = column[~missing_mask(column)] if len(column) else column
    if datatype == "BYTES":
        return _unseen_string({str(v) for v in known} | {str(v) for v in present})
    ints = [int(v) for v in known] + [int(v) for v in np.asarray(present, dtype=np.int64)]
    return max(ints, default=0) + 1


def _missing_value(datatype: str) -> Any:
    return np.nan if datatype == "FP32" else None


def parity_rows(plan: Plan, model: TrainedModel, holdout_columns: Columns) -> dict[str, np.ndarray]:
    """Holdout rows plus, per categorical input, a row with an unseen value and (strings) one
    with a missing value; per numeric input a row with NaN; and one row with everything missing
    or unseen. Integer inputs have no missing value in the graph (int64 cannot hold one)."""
    features = plan.training.features
    n = len(next(iter(holdout_columns.values()))) if holdout_columns else 0
    template: dict[str, Any] = {}
    unseen: dict[str, Any] = {}
    for f in features:
        column = np.asarray(holdout_columns[f.input_name]) if n else np.asarray([])
        if f.categorical is not None:
            unseen[f.input_name] = _unseen_value(model, f.input_name, f.datatype, column)
        first_missing = not n or bool(missing_mask(column[:1])[0])
        template[f.input_name] = (
            _fallback(f.datatype, unseen.get(f.input_name)) if first_missing else column[0]
        )
    extra: list[dict[str, Any]] = []
    for f in features:
        name = f.input_name
        if f.categorical is not None:
            extra.append({**template, name: unseen[name]})
        if f.datatype != "INT64":
            extra.append({**template, name: _missing_value(f.datatype)})
    extra.append(
        {
            f.input_name: unseen[f.input_name]
            if f.datatype == "INT64"
            else _missing_value(f.datatype)
            for f in features
        }
    )
    out: dict[str, np.ndarray] = {}
    for f in features:
        name = f.input_name
        dtype = {"FP32": np.float32, "INT64": np.int64}.get(f.datatype, object)
        added = np.asarray([row[name] for row in extra], dtype=dtype)
        base = np.asarray(holdout_columns[name]) if n else np.zeros(0, dtype)
        if f.datatype == "INT64":  # int64 graph inputs cannot be missing: such rows go unseen
            base = np.where(missing_mask(base), unseen[name], base)
        base = base.astype(dtype)
        out[name] = np.concatenate([base, added])
    return out


def _fallback(datatype: str, unseen: Any) -> Any:
    """A template value when there are no holdout rows."""
    if datatype == "INT64":
        return unseen
    return _missing_value(datatype)


def onnx_feed(session: Any, columns: Columns) -> dict[str, np.ndarray]:
    """The session's inputs from raw columns: [N,1] float32, int64, or str objects ("" missing)."""
    feed = {}
    for spec in session.get_inputs():
        raw = np.asarray(columns[spec.name]).reshape(-1)
        if spec.type == "tensor(string)":
            feed[spec.name] = as_text(raw, missing_mask(raw)).reshape(-1, 1)
        elif spec.type == "tensor(int64)":
            feed[spec.name] = raw.astype(np.int64).reshape(-1, 1)
        else:
            feed[spec.name] = raw.astype(np.float32).reshape(-1, 1)
    return feed


def session_outputs(session: Any, columns: Columns) -> dict[str, np.ndarray]:
    """Run a serving graph on raw columns (1-D or [N,1]); every output by name."""
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, onnx_feed(session, columns)), strict=True))


def check_parity(
    model: TrainedModel, onnx_path: Path, columns: Columns, tolerance: float = 1e-5
) -> float:
    """Max abs difference between the model's `output` and the graph's on raw `columns`
    (regression: relative to max(1, |value|)). A `label` that differs from the model's predicted
    class on a row not within `tolerance` of the decision boundary counts as a difference of 1."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    expected = np.asarray(model.predict(columns), dtype=np.float64)
    results = session_outputs(session, columns)
    got = np.asarray(results[OUTPUT], dtype=np.float64)
    if got.shape != expected.shape:
        return float("inf")
    if not len(expected):
        return 0.0
    diff = np.abs(expected - got)
    if model.classes is None:
        diff = diff / np.maximum(1.0, np.abs(expected))
    worst = float(np.max(np.where(np.isnan(diff), np.inf, diff)))
    if model.classes is None:
        return worst
    if LABEL not in results:
        return float("inf")
    task = "binary_classification" if expected.shape[1] == 1 else "multiclass_classification"
    want = predicted_labels(task, tuple(model.classes), expected).reshape(-1)
    have = np.asarray(results[LABEL]).reshape(-1).astype(str)
    clear = _decision_margin(expected) > tolerance
    if np.any((want.astype(str) != have) & clear):
        worst = max(worst, 1.0)
    return worst


def _decision_margin(output: np.ndarray) -> np.ndarray:
    """How far each row is from flipping its predicted class."""
    if output.shape[1] == 1:
        return np.abs(output[:, 0] - 0.5)
    top2 = np.sort(output, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]
