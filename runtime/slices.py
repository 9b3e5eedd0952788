"""Holdout slices: every metric per slice of a feature (its values, or numeric bins), slice gates.

A slice gate is a gate like any other: a failing one blocks registration, and its row names the
slice (`min`/`max` per slice) or the best and worst slices (`max_gap`). Slices with fewer rows than
`min_slice_rows`, or (binary) with a single class, where ranking metrics mean nothing, are reported
but not gated.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from specml.compiler.ir import Plan, Slice
from specml.runtime.encoding import missing_mask

MISSING = "(missing)"
_MAX_VALUE_SLICES = 50  # a feature with more distinct values needs bins


def _edge(value: float) -> str:
    return f"{value:g}"


def slice_masks(spec: Slice, column: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """(slice name, row mask) for each slice of one feature column, in a stable order."""
    from specml.runtime.steps.common import INT_MISSING

    raw = np.asarray(column)
    # integer categoricals carry missing as INT_MISSING (an int64 column cannot hold None)
    missing = raw == INT_MISSING if raw.dtype.kind in "iu" else missing_mask(raw)
    name = spec.input_name
    out: list[tuple[str, np.ndarray]] = []
    if spec.bins is not None:
        values = np.where(missing, np.nan, raw).astype(np.float64)
        edges = list(spec.bins)
        out.append((f"{name} < {_edge(edges[0])}", ~missing & (values < edges[0])))
        for low, high in zip(edges, edges[1:], strict=False):
            mask = ~missing & (values >= low) & (values < high)
            out.append((f"{_edge(low)} <= {name} < {_edge(high)}", mask))
        out.append((f"{name} >= {_edge(edges[-1])}", ~missing & (values >= edges[-1])))
    else:
        present = raw[~missing]
        keys = sorted({str(v) for v in present.tolist()})
        if len(keys) > _MAX_VALUE_SLICES:
            from specml.runtime.steps.common import step_error

            raise step_error(
                f"slice feature '{name}' has {len(keys)} distinct values in the holdout",
                hint="give the slice `bins: [...]`, or slice by a categorical feature",
                code="slices",
            )
        text = np.array([str(v) for v in raw.tolist()], dtype=object)
        out.extend((f"{name}={key}", ~missing & (text == key)) for key in keys)
    if missing.any():
        out.append((f"{name}={MISSING}", missing))
    return [(label, mask) for label, mask in out if mask.any()]


def _gated(task: str, y: np.ndarray, rows: int, min_rows: int) -> bool:
    if rows < min_rows:
        return False
    return task != "binary_classification" or len(np.unique(y)) > 1


def slice_metrics(
    plan: Plan, columns: Mapping[str, np.ndarray], y: np.ndarray, output: np.ndarray
) -> list[dict[str, Any]]:
    """One row per slice: feature, slice name, rows, gated, and every holdout metric."""
    from specml.runtime.steps.metrics import compute_metrics

    e = plan.evaluation
    names = sorted(set(e.metrics) | {g.metric for g in e.slice_gates})
    rows = []
    for spec in e.slices:
        for label, mask in slice_masks(spec, columns[spec.input_name]):
            n = int(mask.sum())
            rows.append(
                {
                    "feature": spec.input_name,
                    "slice": label,
                    "rows": n,
                    "gated": _gated(plan.training.task, y[mask], n, e.min_slice_rows),
                    "metrics": compute_metrics(plan.training.task, y[mask], output[mask], names),
                }
            )
    return rows


def slice_gate_report(plan: Plan, slices: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Gate rows (as the evaluate step's): per-slice min/max, and the gap per feature."""
    from specml.compiler.metrics import METRICS

    out: list[dict[str, Any]] = []
    for gate in plan.evaluation.slice_gates:
        gated = [s for s in slices if s["gated"]]
        if gate.kind in ("min", "max"):
            op = ">=" if gate.kind == "min" else "<="
            for s in gated:
                value = s["metrics"][gate.metric]
                margin = value - gate.threshold if op == ">=" else gate.threshold - value
                out.append(
                    {
                        "gate": f"{gate.metric} {op} {gate.threshold} on slice {s['slice']}",
                        "metric": gate.metric,
                        "op": op,
                        "threshold": gate.threshold,
                        "value": value,
                        "margin": margin,
                        "passed": margin >= 0,
                        "slice": s["slice"],
                    }
                )
            continue
        higher = METRICS[gate.metric].higher_is_better
        for feature in dict.fromkeys(s["feature"] for s in gated):
            group = [s for s in gated if s["feature"] == feature]
            if len(group) < 2:
                continue
            ranked = sorted(group, key=lambda s: s["metrics"][gate.metric], reverse=higher)
            best, worst = ranked[0], ranked[-1]
            gap = abs(best["metrics"][gate.metric] - worst["metrics"][gate.metric])
            out.append(
                {
                    "gate": f"{gate.metric} gap <= {gate.threshold} across {feature} slices: "
                    f"worst {worst['slice']} ({worst['metrics'][gate.metric]:.4g}), "
                    f"best {best['slice']} ({best['metrics'][gate.metric]:.4g})",
                    "metric": gate.metric,
                    "op": "<=",
                    "threshold": gate.threshold,
                    "value": gap,
                    "margin": gate.threshold - gap,
                    "passed": gap <= gate.threshold,
                    "slice": worst["slice"],
                }
            )
    return out


def evaluate_slices(
    plan: Plan, columns: Mapping[str, np.ndarray], y: np.ndarray, output: np.ndarray
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The evaluate step's hook: (per-slice metrics, slice gate rows); empty without slices."""
    if not plan.evaluation.slices:
        return [], []
    slices = slice_metrics(plan, columns, y, output)
    return slices, slice_gate_report(plan, slices)


def slice_mlflow_metrics(slices: list[dict[str, Any]]) -> dict[str, float]:
    """Flat MLflow metric names per slice, e.g. `slice.island=Dream.roc_auc`."""
    import re

    out = {}
    for s in slices:
        name = s["slice"].replace("<=", "le").replace(">=", "ge").replace("<", "lt")
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name.replace("=", "_eq_"))
        for metric, value in s["metrics"].items():
            out[f"slice.{safe}.{metric}"] = float(value)
    return out
