"""`specml monitor` on the local target without training: a reference + request log in a tmp workdir.

Covers the drift alert at the spec's threshold, the JSON summary + Evidently HTML, alert log and
webhook, retrain action/trigger with cooldown, latency alert -> rollback, delayed labels ->
metric-drop alert, and the CLI commands.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from specml.compiler.api import plan_file
from specml.runtime.monitor.reference import write_reference
from specml.runtime.monitor.requestlog import RequestLog, request_log_dir
from specml.targets.local.monitor import (
    MonitorOptions,
    ingest_labels,
    monitor_once,
    rollout_state_path,
)
from specml.targets.local.state import save_state, workdir

SPECS = Path(__file__).resolve().parents[3] / "specs"
T0 = 1_800_000_000.0


def churn_rows(rng: np.random.Generator, n: int, shift: float = 0.0) -> pd.DataFrame:
    """Churn-like features; `shift` moves monthly_spend up by that many of its sds (~42)."""
    return pd.DataFrame(
        {
            "customer_stats:tenure_months": rng.integers(1, 72, n).astype(float),
            "customer_stats:monthly_spend": rng.gamma(2.0, 30.0, n) + shift * 42.0,
            "customer_stats:support_calls_30d": rng.poisson(1.5, n).astype(float),
            "usage:logins_7d": rng.poisson(5, n).astype(float),
            "usage:minutes_7d": rng.exponential(90.0, n),
        }
    )


def make_spec(folder: Path, webhook: str | None = None, new_rows: int | None = None) -> Path:
    raw = yaml.safe_load((SPECS / "churn.yaml").read_text())
    if new_rows is not None:
        raw["retraining"]["triggers"] = [{"new_rows": new_rows}]
    for alert in raw["alerts"].values():  # YAML 1.1 reads the key `on` as True
        if True in alert:
            alert["on"] = alert.pop(True)
    raw["targets"]["local"].update(workdir=".specml", port=1)  # port 1: nothing listens
    # numeric inputs only: these tests are about the monitor, not categorical drift
    raw["features"]["views"]["customer_stats"]["fields"].pop("plan_type", None)
    if webhook:
        raw["notifications"] = {
            "webhook": {"url": {"env": "SPECML_TEST_WEBHOOK"}, "allow_private": True}
        }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spec.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return folder / "spec.yaml"


@pytest.fixture()
def setup(tmp_path: Path):  # noqa: ANN201
    """A tmp churn workdir with a champion's reference, a recorded run, and an empty request log."""
    plan = plan_file(make_spec(tmp_path))
    wd = workdir(plan, tmp_path)
    rng = np.random.default_rng(0)
    train = churn_rows(rng, 3000)
    names = [f.ref for f in plan.training.features]
    write_reference(plan, train[names], rng.beta(2, 5, 3000), wd / "serving" / "current")
    started = datetime.fromtimestamp(T0 - 86400, tz=UTC).isoformat()
    save_state(
        wd, {"runs": [{"status": "applied", "started": started, "metrics": {"roc_auc": 0.9}}]}
    )
    return tmp_path, plan, wd, names


def feed(wd: Path, names: list[str], frame: pd.DataFrame, preds: np.ndarray, at: float) -> None:
    log = RequestLog(request_log_dir(wd), feature_names=names)
    for i, (row, p) in enumerate(zip(frame[names].to_numpy(), preds, strict=True)):
        log.append(row, p, "1", request_id=f"r{at:.0f}-{i}", entity={"customer_id": i}, ts=at)
    log.close()


class Recorder:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, plan: Any, base: Path, reasons: list[str], **_: Any) -> dict[str, Any]:
        self.calls.append(reasons)
        return {"status": "applied", "reasons": reasons, "model_version": "2"}


def test_calm_traffic_raises_nothing_and_writes_reports(setup) -> None:  # noqa: ANN001
    base, plan, wd, names = setup
    rng = np.random.default_rng(1)
    feed(wd, names, churn_rows(rng, 1500), rng.beta(2, 5, 1500), T0 - 60)
    retrain = Recorder()
    result = monitor_once(plan, base, MonitorOptions(now=T0), retrain_fn=retrain)
    assert result.summary["requests"] == 1500
    assert result.summary["alerts"]["feature_drift"] == "ok"
    assert max(f["psi"] for f in result.summary["drift"]["features"].values()) < 0.1
    assert result.summary["prediction_drift"]["features"]["prediction"]["psi"] < 0.1
    assert result.events == [] and retrain.calls == []
    on_disk = json.loads((wd / "monitor" / "summary.json").read_text())
    assert on_disk["drift"] == result.summary["drift"]
    html = (wd / "monitor" / "evidently_drift.html").read_text()
    assert len(html) > 10_000 and "Drift" in html and "customer_stats:monthly_spend" in html
    both = json.loads((wd / "monitor" / "drift_summary.json").read_text())
    assert both["specml"]["drifted"] == both["evidently"]["drifted"]


def test_drift_fires_critical_logs_posts_and_retrains_once(setup, monkeypatch) -> None:  # noqa: ANN001
    base, plan, wd, names = setup
    received: list[dict[str, Any]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("SPECML_TEST_WEBHOOK", f"http://127.0.0.1:{server.server_port}/hook")
    plan = plan_file(make_spec(base, webhook="yes"))
    rng = np.random.default_rng(2)
    feed(wd, names, churn_rows(rng, 1500, shift=1.0), rng.beta(2, 5, 1500), T0 - 60)
    retrain = Recorder()
    result = monitor_once(plan, base, MonitorOptions(now=T0, evidently=False), retrain_fn=retrain)
    server.shutdown()
    psi = result.summary["drift"]["features"]["customer_stats:monthly_spend"]["psi"]
    assert psi >= 0.2  # the spec's critical threshold
    (event,) = result.events
    assert (event["alert_id"], event["level"], event["threshold"]) == (
        "feature_drift",
        "critical",
        0.2,
    )
    assert event["details"]["worst"] == "customer_stats:monthly_spend"
    assert retrain.calls == [["alert 'feature_drift' is critical"]]
    logged = [json.loads(x) for x in (wd / "monitor" / "alerts.jsonl").read_text().splitlines()]
    assert [(e["alert_id"], e["level"]) for e in logged] == [("feature_drift", "critical")]
    assert [(e["alert_id"], e["level"]) for e in received] == [("feature_drift", "critical")]
    # Still drifting an hour later: the level is unchanged (no new event) and the cooldown holds.
    again = monitor_once(
        plan, base, MonitorOptions(now=T0 + 3600, evidently=False), retrain_fn=retrain
    )
    assert again.events == [] and again.summary["alerts"]["feature_drift"] == "critical"
    assert len(retrain.calls) == 1 and again.summary["retrain_reasons"] == []


def test_window_leaves_out_old_traffic(setup) -> None:  # noqa: ANN001
    base, plan, wd, names = setup
    rng = np.random.default_rng(3)
    feed(wd, names, churn_rows(rng, 800, shift=1.0), rng.beta(2, 5, 800), T0 - 7200)  # > 1h ago
    feed(wd, names, churn_rows(rng, 800), rng.beta(2, 5, 800), T0 - 60)
    result = monitor_once(plan, base, MonitorOptions(now=T0, evidently=False, act=False))
    assert result.summary["requests"] == 800 and result.summary["alerts"]["feature_drift"] == "ok"
    # Too little traffic for a verdict: 60 very shifted rows judge nothing.
    feed(wd, names, churn_rows(rng, 60, shift=3.0), rng.beta(2, 5, 60), T0 + 10)
    few = monitor_once(
        plan, base, MonitorOptions(now=T0 + 20, evidently=False, act=False, window_rows=60)
    )
    assert few.summary["requests"] == 60 and few.summary["drift"] is None
    assert few.summary["alerts"]["feature_drift"] == "ok"


class Metrics(BaseHTTPRequestHandler):
    """A fake /metrics whose p95 is ~480 ms; every scrape adds 100 more requests."""

    scrapes = 0

    def do_GET(self) -> None:  # noqa: N802
        Metrics.scrapes += 1
        n = 100 * Metrics.scrapes
        body = (
            "# TYPE specml_request_latency_seconds histogram\n"
            f'specml_request_latency_seconds_bucket{{le="0.1"}} 0\n'
            f'specml_request_latency_seconds_bucket{{le="0.5"}} {n}\n'
            f'specml_request_latency_seconds_bucket{{le="+Inf"}} {n}\n'
            f"specml_request_latency_seconds_count {n}\nspecml_request_latency_seconds_sum {0.3 * n}\n"
            f"# TYPE specml_requests_total counter\nspecml_requests_total {n}\n"
        ).encode()
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_latency_alert_holds_for_seconds_then_rolls_back(setup) -> None:  # noqa: ANN001
    from specml.runtime.rollout.controller import Controller
    from specml.runtime.rollout.registry import MemoryRegistry

    base, plan, wd, _ = setup
    registry = MemoryRegistry({"champion": "1", "challenger": "2"})
    path = rollout_state_path(plan, base)
    Controller.start(plan, path, "2", "1", registry=registry).begin()
    server = HTTPServer(("127.0.0.1", 0), Metrics)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/metrics"
    opts = dict(metrics_url=url, evidently=False, registry=registry)
    first = monitor_once(plan, base, MonitorOptions(now=T0, **opts))
    assert first.summary["live"]["p95_latency_ms"] == pytest.approx(480.0)
    assert first.summary["alerts"]["slow"] == "ok"  # breached, but `for: 5m` not yet held
    second = monitor_once(plan, base, MonitorOptions(now=T0 + 301, **opts))
    server.shutdown()
    assert second.summary["live"]["requests"] == 100  # the window between the two scrapes
    assert second.summary["alerts"]["slow"] == "critical"
    (action,) = second.actions
    assert action["action"] == "rollback" and action["done"] is True
    assert json.loads(path.read_text())["status"] == "rolled_back"
    assert registry.calls[0][:2] == ("reject", "2") and "slow" in registry.calls[0][2]


def test_delayed_labels_raise_metric_drop(setup) -> None:  # noqa: ANN001
    base, plan, wd, names = setup
    rng = np.random.default_rng(4)
    preds = rng.random(1000)
    feed(wd, names, churn_rows(rng, 1000), preds, T0 - 60)
    # Labels that agree with the predictions only weakly: live roc_auc ~0.7 vs holdout 0.9.
    truth = (rng.random(1000) < np.where(rng.random(1000) < 0.4, preds, 0.5)).astype(int)
    labels = pd.DataFrame({"customer_id": np.arange(1000), "churned": truth})
    labels.to_csv(base / "labels.csv", index=False)
    got = ingest_labels(plan, base, base / "labels.csv")
    assert got["matched"] == 1000
    from sklearn.metrics import roc_auc_score

    assert got["metrics"]["roc_auc"] == pytest.approx(roc_auc_score(truth, preds))
    retrain = Recorder()
    result = monitor_once(plan, base, MonitorOptions(now=T0, evidently=False), retrain_fn=retrain)
    assert result.summary["alerts"]["accuracy"] == "critical"
    assert result.summary["live_metrics"]["roc_auc"] < 0.85
    assert retrain.calls == [["alert 'accuracy' critical (action retrain)"]]


def test_posted_labels_reach_the_next_monitor_pass(setup) -> None:  # noqa: ANN001
    """Labels POSTed to the server (by request id or by entity) are joined without a file."""
    from sklearn.metrics import roc_auc_score
    from specml.runtime.monitor.labels import LabelSink, posted_labels_dir

    base, plan, wd, names = setup
    rng = np.random.default_rng(6)
    preds = rng.random(800)
    feed(wd, names, churn_rows(rng, 800), preds, T0 - 60)
    truth = (rng.random(800) < np.where(rng.random(800) < 0.4, preds, 0.5)).astype(int)
    sink = LabelSink(posted_labels_dir(wd))
    # Half by the request id the server answered with, half by entity key, in two requests;
    # a relabel of row 0 later wins over its first label.
    sink.append([{"label": 1 - int(truth[0]), "request_id": f"r{T0 - 60:.0f}-0"}])
    sink.append([{"label": int(truth[i]), "request_id": f"r{T0 - 60:.0f}-{i}"} for i in range(400)])
    sink.append([{"label": int(truth[i]), "customer_id": i} for i in range(400, 800)])
    result = monitor_once(
        plan, base, MonitorOptions(now=T0, evidently=False), retrain_fn=Recorder()
    )
    saved = json.loads((wd / "monitor" / "labels.json").read_text())
    assert saved["source"] == "posted" and saved["matched"] == 800
    assert saved["metrics"]["roc_auc"] == pytest.approx(roc_auc_score(truth, preds))
    assert result.summary["live_metrics"]["roc_auc"] == saved["metrics"]["roc_auc"]
    assert result.summary["alerts"]["accuracy"] == "critical"
    # Nothing new posted: the next pass does not recompute them.
    before = (wd / "monitor" / "labels.json").stat().st_mtime_ns
    monitor_once(plan, base, MonitorOptions(now=T0 + 1, evidently=False), retrain_fn=Recorder())
    assert (wd / "monitor" / "labels.json").stat().st_mtime_ns == before


def test_labels_without_a_file_or_posted_labels_is_a_clear_error(setup) -> None:  # noqa: ANN001
    from specml.compiler.errors import TargetError

    base, plan, wd, names = setup
    feed(wd, names, churn_rows(np.random.default_rng(1), 10), np.zeros(10), T0 - 60)
    with pytest.raises(TargetError, match="no labels were posted"):
        ingest_labels(plan, base)


def test_cli_monitor_and_labels_json(setup) -> None:  # noqa: ANN001
    import time

    from specml.cli.main import app
    from typer.testing import CliRunner

    base, plan, wd, names = setup
    rng = np.random.default_rng(5)
    at = float(int(time.time()) - 60)
    feed(wd, names, churn_rows(rng, 600), rng.random(600), at)
    runner = CliRunner()
    spec = str(base / "spec.yaml")
    out = runner.invoke(
        app, ["monitor", spec, "--once", "--no-evidently", "--report-only", "-f", "json"]
    )
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert doc["result"]["requests"] == 600 and doc["result"]["alerts"]["feature_drift"] == "ok"
    ids = [f"r{at:.0f}-{i}" for i in range(6)]
    pd.DataFrame({"request_id": ids, "churned": [0, 1, 0, 1, 1, 0]}).to_csv(
        base / "l.csv", index=False
    )
    out = runner.invoke(app, ["labels", spec, str(base / "l.csv"), "--no-monitor", "-f", "json"])
    assert out.exit_code == 0, out.output
    (message,) = json.loads(out.stdout)["messages"]
    assert (
        message["message"].startswith("6 of 6 labels matched") and "roc_auc" in message["metrics"]
    )
    pd.DataFrame({"request_id": ["nope"], "churned": [1]}).to_csv(base / "bad.csv", index=False)
    out = runner.invoke(app, ["labels", spec, str(base / "bad.csv"), "--no-monitor", "-f", "json"])
    assert out.exit_code == 3  # no label matched: a TargetError diagnostic, not a traceback
    assert "no_label_match" in out.stdout
    # Without a FILE: the labels POSTed to the server.
    out = runner.invoke(app, ["labels", spec, "--no-monitor", "-f", "json"])
    assert out.exit_code == 3 and "missing_labels" in out.stdout
    from specml.runtime.monitor.labels import LabelSink, posted_labels_dir

    LabelSink(posted_labels_dir(wd)).append([{"request_id": i, "label": 1} for i in ids[:4]])
    out = runner.invoke(app, ["labels", spec, "--no-monitor", "-f", "json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["messages"][0]["message"].startswith("4 of 4 labels matched")


def test_prediction_drift_counts_only_the_champions_answers(setup) -> None:  # noqa: ANN001
    base, plan, wd, names = setup
    (wd / "serving" / "current" / "serving.json").write_text(json.dumps({"model_version": "1"}))
    rng = np.random.default_rng(6)
    feed(wd, names, churn_rows(rng, 1000), rng.beta(2, 5, 1000), T0 - 60)
    log = RequestLog(request_log_dir(wd), feature_names=names)
    log.append(
        churn_rows(rng, 300)[names].to_numpy(), np.full(300, 0.99), "2", ts=T0 - 30
    )  # canary
    log.close()
    result = monitor_once(plan, base, MonitorOptions(now=T0, evidently=False, act=False))
    assert result.summary["requests"] == 1300
    pred = result.summary["prediction_drift"]["features"]["prediction"]
    assert pred["n"] == 1000 and pred["psi"] < 0.1


def test_new_rows_since_the_training_set_trigger_a_retrain(setup) -> None:  # noqa: ANN001
    from specml.runtime.demo_data import write_demo_data

    base, _, wd, _ = setup
    plan = plan_file(make_spec(base, new_rows=50))
    write_demo_data(plan, base, rows=400, seed=1)
    customers = pd.read_parquet(base / "data/churn/customers.parquet")
    cutoff = customers["event_ts"].sort_values().iloc[299]
    newer = int((customers["event_ts"] > cutoff).sum())
    assert 50 <= newer <= 100
    folder = wd / "runs" / "R1" / "build_training_set"
    folder.mkdir(parents=True)
    seen = customers[customers["event_ts"] <= cutoff].rename(
        columns={"event_ts": "event_timestamp"}
    )
    seen.to_parquet(folder / "training_set.parquet")
    started = datetime.fromtimestamp(T0 - 3600, tz=UTC).isoformat()
    save_state(
        wd, {"runs": [{"status": "applied", "run_id": "R1", "started": started, "metrics": {}}]}
    )
    retrain = Recorder()
    result = monitor_once(plan, base, MonitorOptions(now=T0, evidently=False), retrain_fn=retrain)
    assert retrain.calls == [[f"{newer} new rows since the last training (trigger at 50)"]]
    assert result.summary["retrain"]["status"] == "applied"
