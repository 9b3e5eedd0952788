"""The catalogue of model metrics: which task each fits and which direction is better."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricInfo:
    name: str
    tasks: frozenset[str]
    higher_is_better: bool
    description: str


_BIN = "binary_classification"
_MULTI = "multiclass_classification"
_REG = "regression"

METRICS: dict[str, MetricInfo] = {
    m.name: m
    for m in [
        MetricInfo("roc_auc", frozenset({_BIN}), True, "area under the ROC curve"),
        MetricInfo("pr_auc", frozenset({_BIN}), True, "area under the precision-recall curve"),
        MetricInfo("accuracy", frozenset({_BIN, _MULTI}), True, "share of correct predictions"),
        MetricInfo("f1", frozenset({_BIN}), True, "F1 score at threshold 0.5"),
        MetricInfo("precision", frozenset({_BIN}), True, "precision at threshold 0.5"),
        MetricInfo("recall", frozenset({_BIN}), True, "recall at threshold 0.5"),
        MetricInfo("macro_f1", frozenset({_MULTI}), True, "unweighted mean of per-class F1"),
        MetricInfo("log_loss", frozenset({_BIN, _MULTI}), False, "cross-entropy"),
        MetricInfo("rmse", frozenset({_REG}), False, "root mean squared error"),
        MetricInfo("mae", frozenset({_REG}), False, "mean absolute error"),
        MetricInfo("mape", frozenset({_REG}), False, "mean absolute percentage error"),
        MetricInfo("r2", frozenset({_REG}), True, "coefficient of determination"),
    ]
}

PRIMARY_METRIC = {_BIN: "roc_auc", _MULTI: "accuracy", _REG: "rmse"}


def metrics_for(task: str) -> list[str]:
    """Metric names that make sense for a task, sorted."""
    return sorted(name for name, info in METRICS.items() if task in info.tasks)
