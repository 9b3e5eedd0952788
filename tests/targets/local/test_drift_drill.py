"""Drift drill: real training, real server with its request log, `specml monitor`, retrain, rollout.

1. apply (tiny data) -> champion v1, its drift reference published in serving/current;
2. unshifted traffic through the real server -> monitor: no alert, no retrain, no rollout;
3. traffic with monthly_spend shifted -> the drift alert turns critical at the spec's threshold
   -> the retrain (alert trigger) trains on current data -> challenger v2 registered, gates
   applied -> its rollout started (rollout/state.json in shadow, the first step).
The spec drops `must_beat_production` (a retrain on unchanged data need not beat v1); the `min`
gate still applies. About 1.5-2.5 min on 2 shared cores (two trainings).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from specml.compiler.api import plan_file
from specml.runtime.demo_data import write_demo_data
from specml.runtime.monitor.reference import FEATURE_REFERENCE, PREDICTION_REFERENCE
from specml.runtime.monitor.requestlog import read_requests, request_log_dir
from specml.targets.local.monitor import MonitorOptions, monitor_once, rollout_state_path
from specml.targets.local.state import workdir
from specml.targets.local.target import ApplyOptions, LocalTarget

SPECS = Path(__file__).resolve().parents[3] / "specs"
SPEND = "customer_stats:monthly_spend"


def make_spec(folder: Path) -> Path:
    raw = yaml.safe_load((SPECS / "churn.yaml").read_text())
    for alert in raw["alerts"].values():  # YAML 1.1 reads the key `on` as True
        if True in alert:
            alert["on"] = alert.pop(True)
    raw["training"]["hyperparameters"].update({"epochs": 6, "lr": 0.01, "batch_size": 128})
    raw["training"]["gates"] = {"min": {"roc_auc": 0.6}}
    raw["targets"]["local"].update(workdir=".specml", port=1)  # nothing listens on the spec's port
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spec.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return folder / "spec.yaml"


def _wire(values: pd.Series, datatype: str) -> list:
    """One named input's JSON data: null for a missing value (NaN / None)."""
    if datatype == "BYTES":
        return [None if v is None or v != v else str(v) for v in values]
    return [None if v != v else float(v) for v in values.astype("float64")]


def send_traffic(plan, base: Path, rows) -> None:  # noqa: ANN001
    """POST the rows (a frame with one column per feature ref) to a real in-process server:
    KServe v2 infer with one named input per feature, 50 rows a request."""
    from specml.runtime.serving.server import running_server
    from specml.runtime.serving.testing import http_request
    from specml.targets.local.serve import server_config

    config = dataclasses.replace(
        server_config(plan, base, port=0),
        online_features=False,
        request_log_dir=request_log_dir(workdir(plan, base)),
    )
    with running_server(config) as url:
        for i in range(0, len(rows), 50):
            chunk = rows.iloc[i : i + 50]
            body = {
                "id": f"drill-{i}",
                "inputs": [
                    {
                        "name": f.input_name,
                        "shape": [len(chunk), 1],
                        "datatype": f.datatype,
                        "data": _wire(chunk[f.ref], f.datatype),
                    }
                    for f in plan.training.features
                ],
            }
            status, _, answer = http_request(
                url,
                "POST",
                f"/v2/models/{plan.registry.name}/infer",
                json.dumps(body),
                {"Content-Type": "application/json"},
            )
            assert status == 200, answer


def clear_log(wd: Path) -> None:
    for seg in request_log_dir(wd).glob("*.jsonl"):
        seg.unlink()


@pytest.mark.slow
def test_drift_drill(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEAST_USAGE", "False")
    base = tmp_path
    plan = plan_file(make_spec(base))
    write_demo_data(plan, base, rows=1200, seed=3)
    first = LocalTarget().apply(plan, base, ApplyOptions())
    assert first.promoted and first.model_version == "1"
    wd = workdir(plan, base)
    current = wd / "serving" / "current"
    assert (current / FEATURE_REFERENCE).exists() and (current / PREDICTION_REFERENCE).exists()

    # Traffic = rows like the training rows (the training set the run built), in random order.
    names = [f.ref for f in plan.training.features]
    numeric = [f.ref for f in plan.training.features if f.categorical is None]
    (training_set,) = (wd / "runs" / first.run_id).glob("build_training_set/*.parquet")
    rng = np.random.default_rng(0)
    pool = pd.read_parquet(training_set)[names]
    calm = pool.iloc[rng.choice(len(pool), 800, replace=True)].reset_index(drop=True)

    # 2. unshifted: nothing fires
    send_traffic(plan, base, calm)
    logged = read_requests(request_log_dir(wd))
    assert len(logged) == 800 and set(logged["model_version"]) == {"1"}
    np.testing.assert_allclose(
        logged[numeric].to_numpy(dtype=np.float64),
        calm[numeric].to_numpy(dtype=np.float32),
        rtol=0,
        atol=0,
    )
    started = time.perf_counter()
    quiet = monitor_once(plan, base, MonitorOptions(evidently=False))
    assert quiet.summary["alerts"]["feature_drift"] == "ok", quiet.summary["drift"]
    assert quiet.events == [] and quiet.retrain is None
    assert not rollout_state_path(plan, base).exists()
    monitor_seconds = time.perf_counter() - started

    # 3. shifted: monthly_spend up by one standard deviation
    clear_log(wd)
    shifted = calm.copy()
    shifted[SPEND] = shifted[SPEND] + pool[SPEND].std()
    send_traffic(plan, base, shifted)
    loud = monitor_once(plan, base, MonitorOptions(evidently=False))
    psi = loud.summary["drift"]["features"][SPEND]["psi"]
    assert psi >= plan.alert("feature_drift").critical
    (event,) = loud.events
    assert (event["alert_id"], event["level"], event["details"]["worst"]) == (
        "feature_drift",
        "critical",
        SPEND,
    )
    alerts = [json.loads(x) for x in (wd / "monitor" / "alerts.jsonl").read_text().splitlines()]
    assert [(a["alert_id"], a["level"]) for a in alerts] == [("feature_drift", "critical")]
    retrain = loud.retrain
    assert retrain is not None and retrain["status"] == "applied", retrain
    assert retrain["reasons"] == ["alert 'feature_drift' is critical"]
    assert retrain["model_version"] == "2" and not retrain["promoted"]
    assert retrain["aliases"] == {"challenger": "2", "champion": "1"}
    assert (wd / "serving" / "challenger" / "model.onnx").exists()
    rollout = json.loads(rollout_state_path(plan, base).read_text())
    assert (rollout["challenger_version"], rollout["champion_version"]) == ("2", "1")
    assert rollout["status"] == "shadow" and rollout["step_index"] == 0
    assert monitor_seconds < 10
