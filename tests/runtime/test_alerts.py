"""Alerts: PromQL-style quantiles, `for` persistence, alert log, loopback webhook, action callbacks."""

from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pytest
from specml.compiler.api import plan_file
from specml.runtime.monitor.alerts import (
    AlertMonitor,
    WebhookRefused,
    check_webhook_url,
    read_alert_log,
    resolve_secret,
)
from specml.runtime.monitor.live import (
    HistogramSnapshot,
    LiveFigures,
    ServingSnapshot,
    figures,
    histogram_quantile,
    parse_exposition,
)


def test_histogram_quantile_interpolates_like_promql() -> None:
    buckets = [(0.1, 10.0), (0.2, 30.0), (0.4, 38.0), (math.inf, 40.0)]
    # rank 20 lies in (0.1, 0.2]: 10 below, 20 inside -> 0.1 + 0.1 * 10/20
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.15)
    # rank 5 in the first bucket, lower bound 0 -> 0.1 * 5/10
    assert histogram_quantile(0.125, buckets) == pytest.approx(0.05)
    # rank 39.6 falls in +Inf: the largest finite bound
    assert histogram_quantile(0.99, buckets) == 0.4
    assert math.isnan(histogram_quantile(0.5, [(0.1, 0.0), (math.inf, 0.0)]))
    assert math.isnan(histogram_quantile(0.5, [(0.1, 3.0)]))  # no +Inf bucket


def test_figures_from_a_real_prometheus_histogram() -> None:
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    registry = CollectorRegistry()
    buckets = tuple(np.round(np.arange(0.001, 0.101, 0.001), 6))
    latency = Histogram(
        "specml_request_latency_seconds",
        "l",
        ["model", "version"],
        buckets=buckets,
        registry=registry,
    )
    requests = Counter(
        "specml_requests_total", "r", ["model", "version", "code"], registry=registry
    )
    errors = Counter(
        "specml_request_errors_total", "e", ["model", "version", "code"], registry=registry
    )
    rng = np.random.default_rng(0)
    observed = rng.uniform(0.0, 0.08, 4000)
    for v in observed:
        latency.labels("churn", "2").observe(v)
    latency.labels("churn", "1").observe(5.0)  # another version: must be filtered out
    requests.labels("churn", "2", "200").inc(3990)
    requests.labels("churn", "2", "500").inc(10)
    errors.labels("churn", "2", "500").inc(10)
    before = parse_exposition("", at=0.0)
    snap = parse_exposition(
        generate_latest(registry).decode(), {"model": "churn", "version": "2"}, at=60
    )
    live = figures(snap.minus(before))
    assert snap.latency.count == 4000
    for q, got in (
        (0.5, live.p50_latency_ms),
        (0.95, live.p95_latency_ms),
        (0.99, live.p99_latency_ms),
    ):
        assert got == pytest.approx(np.quantile(observed, q) * 1000, abs=1.0)  # 1 ms buckets
    assert live.error_rate == pytest.approx(10 / 4000)


def test_snapshot_window_subtracts_the_earlier_scrape() -> None:
    early = ServingSnapshot(HistogramSnapshot(((0.01, 100.0), (math.inf, 100.0))), 100, 0)
    late = ServingSnapshot(HistogramSnapshot(((0.01, 100.0), (math.inf, 200.0))), 200, 50)
    window = figures(late.minus(early))
    assert window.requests == 100 and window.error_rate == 0.5
    assert window.p50_latency_ms == 10.0  # every new observation is above 10 ms -> +Inf bucket


@pytest.fixture()
def fraud(tmp_path: Path):  # type: ignore[no-untyped-def]
    actions: list[tuple[str, str]] = []
    plan = plan_file("specs/fraud.yaml")
    monitor = AlertMonitor(
        plan,
        tmp_path,
        callbacks={
            a: (lambda e, a=a: actions.append((a, e.alert_id))) for a in ("rollback", "retrain")
        },
        env={},
    )
    return plan, monitor, actions


def test_latency_alert_fires_only_after_for_seconds(fraud) -> None:
    plan, monitor, actions = fraud
    alert = plan.alert("tail_latency")
    assert (alert.for_seconds, alert.critical) == (120, 25.0)
    slow = LiveFigures(p99_latency_ms=40.0, error_rate=0.0)
    assert monitor.observe(1000.0, live=LiveFigures(p99_latency_ms=1.0, error_rate=0.0)) == []
    assert monitor.observe(1010.0, live=slow) == []
    assert monitor.observe(1010.0 + alert.for_seconds - 1, live=slow) == []
    assert actions == []
    (event,) = monitor.observe(1010.0 + alert.for_seconds, live=slow)
    assert (event.alert_id, event.level, event.value, event.threshold) == (
        "tail_latency",
        "critical",
        40.0,
        25.0,
    )
    assert actions == [("rollback", "tail_latency")]
    assert monitor.observe(1200.0, live=slow) == []  # still firing: no repeat
    (resolved,) = monitor.observe(1201.0, live=LiveFigures(p99_latency_ms=2.0, error_rate=0.0))
    assert resolved.level == "ok"  # recovery is immediate
    logged = read_alert_log(monitor.workdir)
    assert [(r["alert_id"], r["level"]) for r in logged] == [
        ("tail_latency", "critical"),
        ("tail_latency", "ok"),
    ]
    assert logged[0]["system"] == plan.system.name


def test_interrupted_breach_restarts_the_for_clock(fraud) -> None:
    plan, monitor, actions = fraud
    hot, cool = LiveFigures(error_rate=0.01), LiveFigures(error_rate=0.0)
    assert monitor.observe(0.0, live=hot) == []
    assert monitor.observe(50.0, live=cool) == []
    assert monitor.observe(60.0, live=hot) == []
    assert monitor.observe(119.0, live=hot) == []  # only 59 s since the breach came back
    (event,) = monitor.observe(120.0, live=hot)
    assert (event.alert_id, event.level) == ("errors", "critical")
    assert actions == [("rollback", "errors")]


def test_metric_drop_uses_the_metric_direction(fraud) -> None:
    plan, monitor, actions = fraud
    events = monitor.observe(0.0, holdout_metrics={"pr_auc": 0.60}, live_metrics={"pr_auc": 0.55})
    assert [(e.alert_id, e.level) for e in events] == [("precision_drop", "warn")]
    assert events[0].value == pytest.approx(0.05)
    assert actions == []  # warn notifies only
    (event,) = monitor.observe(1.0, holdout_metrics={"pr_auc": 0.60}, live_metrics={"pr_auc": 0.50})
    assert event.level == "critical" and actions == [("retrain", "precision_drop")]


class _Sink(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def _loopback_allowed(plan):  # noqa: ANN001, ANN202
    notes = plan.notifications.model_copy(update={"webhook_allow_private": True})
    return plan.model_copy(update={"notifications": notes})


def test_webhook_gets_events_when_its_secret_resolves(tmp_path: Path) -> None:
    server = HTTPServer(("127.0.0.1", 0), _Sink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        _Sink.received = []
        plan = _loopback_allowed(plan_file("specs/fraud.yaml"))
        url = f"http://127.0.0.1:{server.server_port}/hook"
        assert resolve_secret(plan.notifications.webhook_url, {"FRAUD_ALERT_WEBHOOK": url}) == url
        monitor = AlertMonitor(plan, tmp_path, env={"FRAUD_ALERT_WEBHOOK": url})
        monitor.observe(0.0, holdout_metrics={"pr_auc": 0.6}, live_metrics={"pr_auc": 0.4})
        assert [(r["alert_id"], r["level"]) for r in _Sink.received] == [
            ("precision_drop", "critical")
        ]
    finally:
        server.shutdown()
        server.server_close()


def test_unreachable_webhook_is_logged_not_raised(tmp_path: Path) -> None:
    probe = HTTPServer(("127.0.0.1", 0), _Sink)
    port = probe.server_port
    probe.server_close()  # nothing listens there now
    plan = _loopback_allowed(plan_file("specs/fraud.yaml"))
    monitor = AlertMonitor(
        plan,
        tmp_path,
        env={"FRAUD_ALERT_WEBHOOK": f"http://127.0.0.1:{port}/"},
        webhook_timeout_s=0.5,
    )
    monitor.observe(0.0, holdout_metrics={"pr_auc": 0.6}, live_metrics={"pr_auc": 0.4})
    lines = [json.loads(x) for x in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert any("webhook_error" in line for line in lines)
    assert [r["level"] for r in read_alert_log(tmp_path)] == ["critical"]
    assert resolve_secret(plan.notifications.webhook_url, {}) is None


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "data:text/plain,hello",
        "ftp://example.com/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/",
        "http://127.0.0.1:9/hook",
        "http://10.0.0.8/hook",
        "http://192.168.1.1/hook",
        "http:///no-host",
        "http://[::1]:80/",
    ],
)
def test_webhook_urls_that_are_refused(url: str) -> None:
    with pytest.raises(WebhookRefused):
        check_webhook_url(url)


def test_private_addresses_need_the_spec_flag_and_metadata_never_passes() -> None:
    assert check_webhook_url("http://127.0.0.1:8080/hook", allow_private=True) == ["127.0.0.1"]
    with pytest.raises(WebhookRefused, match="metadata"):
        check_webhook_url("http://169.254.169.254/", allow_private=True)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "data:,x", "http://169.254.169.254/"])
def test_a_refused_webhook_never_stops_the_alerts_action(tmp_path: Path, url: str) -> None:
    plan = plan_file("specs/fraud.yaml")
    calls: list[str] = []
    monitor = AlertMonitor(
        plan,
        tmp_path,
        env={"FRAUD_ALERT_WEBHOOK": url},
        callbacks={"retrain": lambda e: calls.append(e.alert_id)},
    )
    events = monitor.observe(0.0, holdout_metrics={"pr_auc": 0.6}, live_metrics={"pr_auc": 0.4})
    assert [e.level for e in events] == ["critical"]
    assert calls == ["precision_drop"]  # the critical alert's action ran
    notes = [json.loads(x) for x in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert [n["webhook_error"] for n in notes if "webhook_error" in n] == ["WebhookRefused"]
