"""Per-request contributions of tree models: the native booster exported beside model.onnx.

serving.json's `explain` ({"family": "lightgbm" | "xgboost", "file", "columns"}) names the booster
file and how each raw input becomes a booster column (`tree_booster.booster_columns`, the encoding
the graph does); `tree_booster.booster_matrix` applies it here exactly as in training. The
contributions are the library's own SHAP values (LightGBM `pred_contrib`, XGBoost `pred_contribs`)
in the model's raw score space: one column per input in the spec's order, then the bias, and per
row they sum to the raw score (log-odds for binary, per-class logits for multiclass, the margin
for regression). Multiclass rows hold K such blocks, one per class in class order: [N, K * (F + 1)].

This module is imported only for models whose serving.json has `explain`; the booster (and its
library) load on the first explain request.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

BIAS = "bias"
FAMILIES = ("lightgbm", "xgboost")
SCORE_SPACE = {
    "binary_classification": "log_odds",
    "multiclass_classification": "logits",
    "regression": "margin",
}


class Explainer:
    """The booster of one served model, loaded on first use; thread-safe."""

    def __init__(
        self,
        model_dir: Path,
        doc: Any,
        input_names: tuple[str, ...],
        task: str,
        classes: tuple[str | int, ...] | None,
    ) -> None:
        if not isinstance(doc, dict) or doc.get("family") not in FAMILIES:
            raise ValueError(f"'explain' needs a family of {', '.join(FAMILIES)}; got {doc!r}")
        columns = doc.get("columns")
        if not isinstance(columns, list) or not all(isinstance(c, dict) for c in columns):
            raise ValueError("'explain.columns' must be a list of objects")
        names = tuple(c.get("name") for c in columns)
        if names != input_names:
            raise ValueError(f"'explain.columns' {list(names)} do not match the inputs")
        path = Path(model_dir) / str(doc.get("file", ""))
        if not doc.get("file") or not path.is_file():
            raise ValueError(f"'explain.file' {doc.get('file')!r} is not in {model_dir}")
        self.family: str = doc["family"]
        self.path = path
        self.columns: list[dict[str, Any]] = columns
        self.task = task
        self.classes = classes
        self.blocks = len(classes) if task == "multiclass_classification" and classes else 1
        self._booster: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._booster is None:
                if self.family == "lightgbm":
                    import lightgbm as lgb

                    self._booster = lgb.Booster(model_file=str(self.path))
                else:
                    import xgboost as xgb

                    booster = xgb.Booster()
                    booster.load_model(str(self.path))
                    booster.set_param({"nthread": 1})
                    self._booster = booster
            return self._booster

    def contributions(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """FP32 [N, K * (F + 1)] contributions of a decoded request (input name -> [N, 1])."""
        from specml.runtime.families.tree_booster import booster_matrix

        x = booster_matrix(self.columns, inputs)
        width = self.blocks * (len(self.columns) + 1)
        if len(x) == 0:
            return np.zeros((0, width), dtype=np.float32)
        booster = self._load()
        if self.family == "lightgbm":
            raw = booster.predict(x, pred_contrib=True, num_threads=1)
        else:
            import xgboost as xgb

            types = ["c" if "codes" in c else "q" for c in self.columns]
            matrix = xgb.DMatrix(x, feature_types=types, enable_categorical=True, missing=np.nan)
            raw = booster.predict(matrix, pred_contribs=True)
        return np.asarray(raw, dtype=np.float32).reshape(len(x), width)

    def parameters(self) -> dict[str, Any]:
        """The `contributions` output's parameters: its column names and score space."""
        names = [c["name"] for c in self.columns] + [BIAS]
        doc: dict[str, Any] = {"score": SCORE_SPACE.get(self.task, "margin")}
        if self.blocks > 1 and self.classes:
            doc["classes"] = list(self.classes)
            doc["columns"] = [f"{k}:{n}" for k in self.classes for n in names]
        else:
            doc["columns"] = names
        return doc


def library_missing(exc: ImportError, family: str) -> str:
    """The message when the serving environment lacks the booster's library."""
    return (
        f"explanations for this {family} model need the '{family}' package in the serving "
        f"environment ({exc})"
    )
