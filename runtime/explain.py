"""Global feature importance per model input (original feature), for the evaluation report.

Trees: mean |contribution| per input from the library's own SHAP values (LightGBM `pred_contrib`,
XGBoost `pred_contribs`); a categorical input is one ordinal column there, so nothing needs summing.
MLP / linear: permutation importance on the holdout's raw columns, shuffling one input at a time,
so the one-hot (or embedding) columns of a categorical input move together and count as one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from specml.compiler.ir import Plan

MAX_ROWS = 5000  # importance settles long before this; keeps evaluation fast on big holdouts
REPEATS = 3


def _rows(columns: Mapping[str, np.ndarray], y: np.ndarray, seed: int) -> tuple[dict, np.ndarray]:
    n = len(y)
    if n <= MAX_ROWS:
        return dict(columns), y
    pick = np.sort(np.random.default_rng(seed).choice(n, MAX_ROWS, replace=False))
    return {k: np.asarray(v)[pick] for k, v in columns.items()}, y[pick]


def permutation_importance(
    plan: Plan, model: Any, columns: Mapping[str, np.ndarray], y: np.ndarray, metric: str
) -> dict[str, float]:
    """Mean loss of `metric` (in its better direction) when one input's values are shuffled."""
    from specml.compiler.metrics import METRICS
    from specml.runtime.steps.metrics import compute_metrics

    task = plan.training.task
    sign = 1.0 if METRICS[metric].higher_is_better else -1.0
    base = compute_metrics(task, y, model.predict(columns), [metric])[metric]
    rng = np.random.default_rng(plan.training.seed)
    out = {}
    for f in plan.training.features:
        drops = []
        for _ in range(REPEATS):
            shuffled = dict(columns)
            shuffled[f.input_name] = np.asarray(columns[f.input_name])[rng.permutation(len(y))]
            value = compute_metrics(task, y, model.predict(shuffled), [metric])[metric]
            drops.append(sign * (base - value))
        out[f.input_name] = float(np.mean(drops))
    return out


def feature_importance(
    plan: Plan, model: Any, columns: Mapping[str, np.ndarray], y: np.ndarray
) -> dict[str, Any]:
    """{method, metric?, features: {input: importance}} sorted most important first."""
    cols, labels = _rows(columns, y, plan.training.seed)
    if len(labels) == 0:
        return {"method": "none", "features": {}}
    if plan.training.model.type in ("lightgbm", "xgboost"):
        from specml.runtime.families.tree_booster import native_contributions

        contrib = native_contributions(model, cols)
        values = {f.input_name: float(contrib[:, i].mean()) for i, f in enumerate(model.features)}
        result: dict[str, Any] = {"method": "tree_contributions"}
    else:
        metric = plan.training.primary_metric
        values = permutation_importance(plan, model, cols, labels, metric)
        result = {"method": "permutation", "metric": metric, "repeats": REPEATS}
    ranked = sorted(values.items(), key=lambda kv: -kv[1])
    result["features"] = dict(ranked)
    result["ranking"] = [name for name, _ in ranked]  # JSON reports sort keys; keep the order
    return result


def importance_mlflow_metrics(importance: Mapping[str, Any]) -> dict[str, float]:
    """Flat MLflow metrics: `importance.<input>`."""
    return {f"importance.{k}": float(v) for k, v in importance.get("features", {}).items()}
