"""Train-serve skew check: the offline path (training rows, point-in-time features) vs the online path.

Legs, all on holdout data:
1. the trained model vs ONNX on the holdout rows of the training set (what training saw), within the export's
   parity tolerance (float32 rounding differs between the two runtimes);
2. for the holdout's entities, Feast point-in-time features as of the materialization time vs the
   Feast online store (by entity key): same raw columns (a category that differs counts as 1),
   same ONNX predictions;
3. optionally a caller's `predict_online(entity_rows) -> np.ndarray` (e.g. the HTTP server) vs 2;
4. optionally a caller's `predict_inputs(columns) -> np.ndarray` (the server's named inputs, raw
   strings included) vs the ONNX graph on the same holdout rows.

The online store keeps the latest value even after its view's TTL has expired, while the offline
join treats it as missing: such entities are counted as `stale_rows` and left out of 2. The
server applies the views' TTLs (as of the same time), so 3 compares every entity
(`served_compared_rows`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from specml.compiler.ir import Plan
from specml.runtime.steps.common import (
    INT_MISSING,
    TIMESTAMP,
    entity_join_keys,
    feature_columns,
    read_json,
    take,
)

TOLERANCE = 1e-5
PredictOnline = Callable[[list[dict[str, Any]]], Any]
PredictInputs = Callable[[dict[str, Any]], Any]


def _max_abs(a: Any, b: Any) -> float:
    import numpy as np

    if a.size == 0:
        return 0.0
    both = ~(np.isnan(a) | np.isnan(b))
    return float(np.max(np.abs(a[both] - b[both]))) if both.any() else 0.0


def _missing(values: Any) -> Any:
    """Where a raw column is missing (NaN numbers, None/"" strings, INT_MISSING codes)."""
    import numpy as np

    if values.dtype == object:
        return np.array([v is None or v == "" for v in values.tolist()], dtype=bool)
    if values.dtype.kind == "f":
        return np.isnan(values)
    return values == INT_MISSING


def _column_diff(a: Any, b: Any) -> float:
    """Max |a - b| over rows present in both; a categorical mismatch counts as 1."""
    import numpy as np

    both = ~(_missing(a) | _missing(b))
    if not both.any():
        return 0.0
    if a.dtype.kind == "f":
        return float(np.max(np.abs(a[both].astype("float64") - b[both].astype("float64"))))
    return float(np.any(a[both] != b[both]))


def check_skew(
    plan: Plan,
    onnx_dir: Path,
    model_dir: Path,
    training_set: Path,
    predict_online: PredictOnline | None = None,
    max_entities: int = 200,
    predict_inputs: PredictInputs | None = None,
    tolerance: float = TOLERANCE,
) -> dict[str, Any]:
    """Compare offline and online scoring of holdout data; the report says what differs and by how much."""
    import numpy as np
    import pandas as pd
    from specml.runtime.steps.evaluate import holdout, load_trained
    from specml.runtime.steps.export import (
        MANIFEST,
        ONNX_FILE,
        onnx_predict,
        onnx_session,
        parity_tolerance_for,
    )
    from specml.runtime.steps.features import historical_features, online_features, resolve_repo

    manifest = read_json(Path(onnx_dir) / MANIFEST)
    session = onnx_session(Path(onnx_dir) / ONNX_FILE)
    model, _ = load_trained(plan, Path(model_dir))
    rows, columns, _ = holdout(plan, Path(training_set), model.classes)
    expected = model.predict(columns)
    # with serving.optimize the served graph is INT8 (guarded on the metric, not per row): the
    # model-vs-graph parity rule applies to the FP32 graph the export checked
    fp32 = Path(onnx_dir) / "model.fp32.onnx"
    parity_session = onnx_session(fp32) if fp32.exists() else session
    torch_onnx = _max_abs(expected, onnx_predict(parity_session, columns))
    parity_tolerance = parity_tolerance_for(plan, expected)

    keys = entity_join_keys(plan)
    entities = rows[keys].drop_duplicates(keep="last").tail(max_entities).reset_index(drop=True)
    info = resolve_repo(Path(manifest["feature_repo"]))
    as_of = pd.Timestamp(info["materialized_until"])
    offline = historical_features(info["repo_path"], plan, entities.assign(**{TIMESTAMP: as_of}))
    x_off = feature_columns(plan, offline)
    entity_rows = [
        {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
        for row in entities.to_dict(orient="records")
    ]
    x_on = online_features(info["repo_path"], plan, entity_rows)

    n = len(entity_rows)
    stale = np.zeros(n, dtype=bool)  # expired offline (TTL) but still in the online store
    for name in x_off:
        stale |= _missing(x_off[name]) & ~_missing(x_on[name])
    fresh = ~stale
    missing_online = sum(
        int((~_missing(x_off[k][fresh]) & _missing(x_on[k][fresh])).sum()) for k in x_off
    )
    feature_diff = max((_column_diff(x_off[k][fresh], x_on[k][fresh]) for k in x_off), default=0.0)
    p_off = onnx_predict(session, take(x_off, fresh))
    p_on = onnx_predict(session, take(x_on, fresh))
    report: dict[str, Any] = {
        "holdout_rows": int(len(rows)),
        "entities": int(n),
        "stale_rows": int(stale.sum()),
        "compared_rows": int(fresh.sum()),
        "as_of": as_of.isoformat(),
        "torch_vs_onnx_max_abs_diff": torch_onnx,
        "feature_max_abs_diff": feature_diff,
        "features_missing_online": missing_online,
        "offline_vs_online_max_abs_diff": _max_abs(p_off, p_on),
        "tolerance": tolerance,
    }
    if predict_online is not None:
        p_all = onnx_predict(session, x_off)
        served = np.asarray(predict_online(entity_rows), dtype="float32").reshape(p_all.shape)
        report["offline_vs_served_max_abs_diff"] = _max_abs(p_all, served)
        report["served_compared_rows"] = int(n)
    if predict_inputs is not None:
        some = np.arange(min(len(rows), max_entities))
        offline_rows = onnx_predict(session, take(columns, some))
        served = np.asarray(predict_inputs(take(columns, some)), dtype="float32")
        report["holdout_vs_served_inputs_max_abs_diff"] = _max_abs(
            offline_rows, served.reshape(offline_rows.shape)
        )
        report["served_inputs_rows"] = int(len(some))
    report["torch_vs_onnx_tolerance"] = parity_tolerance
    limits = {k: tolerance for k in report if k.endswith("max_abs_diff")}
    limits["torch_vs_onnx_max_abs_diff"] = parity_tolerance  # the export's parity rule
    failed = [k for k, limit in limits.items() if not report[k] <= limit]
    if missing_online:
        failed.append("features_missing_online")
    report["failed"] = failed
    report["passed"] = not failed
    return report
