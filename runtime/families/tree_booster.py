"""The native booster of a tree model beside its ONNX graph, for per-request explanations.

`booster_columns` reads off the fitted encoders how each raw input becomes one booster column;
`booster_matrix` applies that list to raw columns (at training and, from serving.json's `explain`,
in the server); `export_explainer` writes the booster file; `native_contributions` gives the
trees' own SHAP values per input.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from specml.runtime.encoding import as_text, missing_mask

if TYPE_CHECKING:
    from specml.runtime.families.trees import TreeModel

Columns = Mapping[str, np.ndarray]
EXPLAIN_FILES = {"lightgbm": "model.txt", "xgboost": "model.json"}  # the native booster


def export_explainer(model: TreeModel, folder: Path) -> dict[str, Any]:
    """Write the native booster beside the graph; returns serving.json's `explain` entry."""
    file = EXPLAIN_FILES[model.family]
    Path(folder).mkdir(parents=True, exist_ok=True)
    if model.family == "lightgbm":
        model.booster.booster_.save_model(str(Path(folder) / file))
    else:
        model.booster.get_booster().save_model(str(Path(folder) / file))
    return {"family": model.family, "file": file, "columns": booster_columns(model)}


def booster_columns(model: TreeModel) -> list[dict[str, Any]]:
    """How each raw input becomes one booster column, read off the fitted encoders: a number
    passes as float32 (NaN missing); a categorical's value at position i of `codes` is code i
    ("" is the missing string), any other value `unknown_code`. Serving uses the same list."""
    encode = model.pipeline.named_steps["encode"]
    out: list[dict[str, Any]] = []
    for f in model.features:
        encoder = encode.named_transformers_.get(f"cat_{f.input_name}")
        column: dict[str, Any] = {"name": f.input_name, "datatype": f.datatype}
        if encoder is not None:
            codes = encoder.categories_[0]
            column["codes"] = [v.item() if hasattr(v, "item") else v for v in codes]
            column["unknown_code"] = int(encoder.unknown_value)
        out.append(column)
    return out


def booster_matrix(columns: list[dict[str, Any]], raw: Columns) -> np.ndarray:
    """The booster's input [N, F] float32 from raw columns (1-D or [N, 1]) per `booster_columns`."""
    import pandas as pd

    out = []
    for column in columns:
        values = np.asarray(raw[column["name"]]).reshape(-1)
        if "codes" not in column:
            out.append(values.astype(np.float32))
            continue
        if column["datatype"] == "BYTES":
            probe = as_text(values, missing_mask(values))
            keys = pd.Index(column["codes"], dtype=object)
        else:
            probe = values.astype(np.int64)
            keys = pd.Index(np.asarray(column["codes"], dtype=np.int64))
        index = keys.get_indexer(probe)
        out.append(np.where(index < 0, column["unknown_code"], index).astype(np.float32))
    return np.column_stack(out).astype(np.float32, copy=False)


def native_contributions(model: TreeModel, columns: Columns) -> np.ndarray:
    """Per-row, per-input contributions (SHAP values of the trees) [N, F], summed over classes."""
    x = model.encoded(columns)
    if model.family == "lightgbm":
        raw = np.asarray(model.booster.booster_.predict(x, pred_contrib=True))
    else:
        import xgboost as xgb

        dm = xgb.DMatrix(
            x, feature_types=model.booster.feature_types, enable_categorical=True, missing=np.nan
        )
        raw = np.asarray(model.booster.get_booster().predict(dm, pred_contribs=True))
    n_inputs = len(model.features)
    if raw.ndim == 3:  # xgboost multiclass: [N, K, F+1]
        return np.abs(raw[:, :, :n_inputs]).sum(axis=1)
    width = n_inputs + 1
    blocks = raw.reshape(len(x), -1, width)[:, :, :n_inputs]  # lightgbm multiclass: K blocks
    return np.abs(blocks).sum(axis=1)
