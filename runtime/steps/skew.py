"""Train-serve skew check: the offline path (training rows, point-in-time features) vs the online path.

Legs, all on holdout data:
1. torch vs ONNX on the holdout rows of the training set (what training saw), within the export's
   parity tolerance (float32 rounding differs between the two runtimes);
2. for the holdout's entities, Feast point-in-time features as of the materialization time vs the
   Feast online store (by entity key): same feature vectors, same ONNX predictions;
3. optionally a caller's `predict_online(entity_rows) -> np.ndarray` (e.g. the HTTP server) vs 2.

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
from specml.runtime.steps.common import TIMESTAMP, entity_join_keys, read_json

TOLERANCE = 1e-5
PredictOnline = Callable[[list[dict[str, Any]]], Any]


def _max_abs(a: Any, b: Any) -> float:
    import numpy as np

    if a.size == 0:
        return 0.0
    both = ~(np.isnan(a) | np.isnan(b))
    return float(np.max(np.abs(a[both] - b[both]))) if both.any() else 0.0


def check_skew(
    plan: Plan,
    onnx_dir: Path,
    model_dir: Path,
    training_set: Path,
    predict_online: PredictOnline | None = None,
    max_entities: int = 200,
    tolerance: float = TOLERANCE,
) -> dict[str, Any]:
    """Compare offline and online scoring of holdout data; the report says what differs and by how much."""
    import numpy as np
    import pandas as pd
    from specml.runtime.modeling import load_model, predict
    from specml.runtime.steps.evaluate import holdout
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
    model, _ = load_model(plan, Path(model_dir))
    rows, x, _ = holdout(plan, Path(training_set))
    expected = predict(model, x)
    torch_onnx = _max_abs(expected, onnx_predict(session, x))
    parity_tolerance = parity_tolerance_for(plan, expected)

    keys = entity_join_keys(plan)
    entities = rows[keys].drop_duplicates(keep="last").tail(max_entities).reset_index(drop=True)
    info = resolve_repo(Path(manifest["feature_repo"]))
    as_of = pd.Timestamp(info["materialized_until"])
    offline = historical_features(info["repo_path"], plan, entities.assign(**{TIMESTAMP: as_of}))
    x_off = offline[list(manifest["features"])].to_numpy(dtype="float64", na_value=np.nan)
    x_off = x_off.astype("float32")
    entity_rows = [
        {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
        for row in entities.to_dict(orient="records")
    ]
    x_on = online_features(info["repo_path"], plan, entity_rows)

    stale = (np.isnan(x_off) & ~np.isnan(x_on)).any(axis=1)
    fresh = ~stale
    missing_online = int((~np.isnan(x_off[fresh]) & np.isnan(x_on[fresh])).sum())
    feature_diff = _max_abs(x_off[fresh], x_on[fresh])
    p_off = onnx_predict(session, x_off[fresh])
    p_on = onnx_predict(session, x_on[fresh])
    report: dict[str, Any] = {
        "holdout_rows": int(len(x)),
        "entities": int(len(entities)),
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
        report["served_compared_rows"] = int(len(entity_rows))
    report["torch_vs_onnx_tolerance"] = parity_tolerance
    limits = {k: tolerance for k in report if k.endswith("max_abs_diff")}
    limits["torch_vs_onnx_max_abs_diff"] = parity_tolerance  # the export's parity rule
    failed = [k for k, limit in limits.items() if not report[k] <= limit]
    if missing_online:
        failed.append("features_missing_online")
    report["failed"] = failed
    report["passed"] = not failed
    return report
