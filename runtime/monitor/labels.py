"""Delayed labels: join a label file to logged predictions and compute the live model metrics.

A label file (csv, parquet, json lines) has a label column (the spec's label field, or `label`)
and a key: `request_id` (as logged), or the entity join keys (the newest logged prediction for
each entity is the one labelled). The metrics are those named by metric_drop alerts/triggers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from specml.compiler.errors import Diagnostic, TargetError
from specml.compiler.ir import Plan


def _error(message: str, hint: str, code: str = "bad_labels") -> TargetError:
    return TargetError([Diagnostic(message, hint=hint, stage="target", code=code)])


def read_label_file(path: str | Path) -> Any:
    """A DataFrame from .csv, .parquet or .jsonl/.json (one object per line)."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise _error(
            f"label file {path} not found", "pass a csv, parquet or jsonl file", "missing_labels"
        )
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix in (".jsonl", ".json", ".ndjson"):
        return pd.read_json(path, lines=True)
    return pd.read_csv(path)


def label_metrics_wanted(plan: Plan) -> list[str]:
    """Model metrics named by metric_drop alerts and triggers (sorted, unique)."""
    names = {a.metric for a in plan.alerts if a.kind == "metric_drop"}
    if plan.retraining is not None:
        names |= {
            t.metric for t in plan.retraining.triggers if t.kind == "metric_drop" and t.metric
        }
    return sorted(names)


def join_labels(
    plan: Plan, labels: Any, requests: Any, join_keys: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """(y_true, model output [N, K]) for every label that matches a logged prediction."""
    label_col = (
        plan.features.label.field if plan.features.label.field in labels.columns else "label"
    )
    if label_col not in labels.columns:
        raise _error(
            f"the label file has no '{plan.features.label.field}' or 'label' column",
            "add the label column",
        )
    pred_cols = [c for c in requests.columns if c == "prediction" or c.startswith("prediction:")]
    if "request_id" in labels.columns:
        logged = requests.dropna(subset=["request_id"]).drop_duplicates("request_id", keep="last")
        merged = labels.merge(logged, on="request_id", how="inner", suffixes=("_label", ""))
    elif join_keys and all(k in labels.columns for k in join_keys):
        ent = requests[requests["entity"].notna()].copy()
        for k in join_keys:
            ent[k] = [e.get(k) for e in ent["entity"]]
        ent = ent.dropna(subset=list(join_keys)).drop_duplicates(list(join_keys), keep="last")
        for k in join_keys:
            ent[k] = ent[k].astype(labels[k].dtype)
        merged = labels.merge(ent, on=list(join_keys), how="inner", suffixes=("_label", ""))
    else:
        raise _error(
            f"the label file has neither a request_id column nor the entity keys {list(join_keys)}",
            "add request_id (as logged by the server) or the entity keys",
        )
    y_col = label_col if label_col in merged.columns else f"{label_col}_label"
    return merged[y_col].to_numpy(), merged[pred_cols].to_numpy(dtype=np.float64)


def live_metrics(
    plan: Plan, labels: Any, requests: Any, join_keys: Sequence[str]
) -> dict[str, Any]:
    """The metrics of labelled, logged predictions (+ how many matched)."""
    from specml.runtime.steps.metrics import compute_metrics

    y, output = join_labels(plan, labels, requests, join_keys)
    if len(y) == 0:
        raise _error(
            "no label matched a logged prediction",
            "check request ids / entity keys against the request log (<workdir>/monitor/requests)",
            "no_label_match",
        )
    task = plan.training.task
    y = y.astype("float32" if task == "regression" else "int64")
    metrics = compute_metrics(task, y, output, label_metrics_wanted(plan))
    return {"metrics": metrics, "matched": int(len(y)), "labels": int(len(labels))}
