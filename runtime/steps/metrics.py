"""Model metrics by name (the compiler's catalogue), computed with scikit-learn."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


def compute_metrics(
    task: str, y_true: np.ndarray, output: np.ndarray, names: list[str] | tuple[str, ...]
) -> dict[str, float]:
    """Each named metric for the model output ([N,1] probability/value or [N,K] probabilities)."""
    import numpy as np
    from sklearn import metrics as m

    out: dict[str, float] = {}
    if task == "regression":
        pred = output.reshape(-1).astype("float64")
        y = y_true.astype("float64")
        for name in names:
            if name == "rmse":
                out[name] = float(np.sqrt(m.mean_squared_error(y, pred)))
            elif name == "mae":
                out[name] = float(m.mean_absolute_error(y, pred))
            elif name == "mape":
                out[name] = float(m.mean_absolute_percentage_error(y, pred))
            elif name == "r2":
                out[name] = float(m.r2_score(y, pred))
        return out
    if task == "binary_classification":
        p1 = np.clip(output.reshape(-1).astype("float64"), 1e-7, 1 - 1e-7)
        proba = np.stack([1 - p1, p1], axis=1)
    else:
        proba = np.clip(output.astype("float64"), 1e-7, 1.0)
        proba = proba / proba.sum(axis=1, keepdims=True)
    pred = proba.argmax(axis=1)
    two_classes = len(np.unique(y_true)) > 1
    for name in names:
        if name == "roc_auc":
            out[name] = float(m.roc_auc_score(y_true, proba[:, 1])) if two_classes else 0.5
        elif name == "pr_auc":
            out[name] = (
                float(m.average_precision_score(y_true, proba[:, 1])) if two_classes else 0.0
            )
        elif name == "accuracy":
            out[name] = float(m.accuracy_score(y_true, pred))
        elif name == "f1":
            out[name] = float(m.f1_score(y_true, pred, zero_division=0))
        elif name == "precision":
            out[name] = float(m.precision_score(y_true, pred, zero_division=0))
        elif name == "recall":
            out[name] = float(m.recall_score(y_true, pred, zero_division=0))
        elif name == "macro_f1":
            out[name] = float(m.f1_score(y_true, pred, average="macro", zero_division=0))
        elif name == "log_loss":
            out[name] = float(m.log_loss(y_true, proba, labels=list(range(proba.shape[1]))))
    return out
