"""The controller's queries against a REAL Prometheus (Debian's `prometheus`, started here) scraping
a test exporter that replays Knative's queue-proxy series: a healthy canary, then a breach.

What the stand-in tests cannot show: that the compiled expressions (rates over the analysis
window, histogram quantiles, the `$revision` binding, the 5xx ratio) give the controller the right
figures from real series, and that its decisions follow. The controller's clock is manual (holds of
hours); Prometheus scrapes every second in real time.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from specml.compiler.api import plan_file
from specml.runtime.rollout.controller import ManualClock
from specml.runtime.rollout.kubernetes import ControllerConfig, PrometheusFigures, drive

sys.path.insert(0, str(Path(__file__).parent))
from kube_standins import KubeApi  # noqa: E402
from test_rollout_kubernetes import NEW, OLD, _isvc  # noqa: E402

PROMETHEUS = shutil.which("prometheus")
pytestmark = [
    pytest.mark.slow,  # starts a Prometheus server and waits out real scrapes
    pytest.mark.skipif(
        PROMETHEUS is None, reason="prometheus missing: apt-get install prometheus (.ci/run does)"
    ),
]
ROOT = Path(__file__).resolve().parents[2]
BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, float("inf"))  # milliseconds, like Knative's


class Exporter:
    """/metrics of two revisions; `errors_per_request` and `latency_ms` switch the timeline."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.start = time.monotonic()
        self.count = {NEW: [0.0, 0.0], OLD: [0.0, 0.0]}  # (2xx, 5xx)
        self.buckets = {NEW: [0.0] * len(BUCKETS), OLD: [0.0] * len(BUCKETS)}
        self.last = time.monotonic()
        self.errors_per_request, self.latency_ms, self.psi = 0.0, 1.5, 0.02
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = exporter.render().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def _advance(self) -> None:
        now = time.monotonic()
        requests = (now - self.last) * 200.0  # 200 requests/s to each revision
        self.last = now
        for revision in (NEW, OLD):
            bad = self.errors_per_request if revision == NEW else 0.0
            self.count[revision][0] += requests * (1 - bad)
            self.count[revision][1] += requests * bad
            latency = self.latency_ms if revision == NEW else 1.5
            for i, le in enumerate(BUCKETS):
                if latency <= le:
                    self.buckets[revision][i] += requests

    def render(self) -> str:
        with self.lock:
            self._advance()
            lines = []
            for rev in (NEW, OLD):
                sel = f'namespace_name="risk",service_name="{rev}",revision_name="{rev}"'
                for cls, value in zip(("2xx", "5xx"), self.count[rev], strict=True):
                    lines.append(
                        f'revision_app_request_count{{{sel},response_code_class="{cls}"}} {value}'
                    )
                for le, value in zip(BUCKETS, self.buckets[rev], strict=True):
                    bound = "+Inf" if le == float("inf") else repr(le)
                    lines.append(
                        f'revision_app_request_latencies_bucket{{{sel},le="{bound}"}} {value}'
                    )
            lines.append(
                f'specml_prediction_psi{{system="fraud-scorer",column="prediction"}} {self.psi}'
            )
            return "\n".join(lines) + "\n"

    def set(self, **values: float) -> None:
        with self.lock:
            self._advance()
            for key, value in values.items():
                setattr(self, key, value)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _query(url: str, expr: str) -> list[Any]:
    query = urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(f"{url}/api/v1/query?{query}", timeout=5) as resp:
        return json.load(resp)["data"]["result"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    exporter = Exporter()
    folder = tmp_path_factory.mktemp("prometheus")
    port = _free_port()
    (folder / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: knative\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{exporter.httpd.server_address[1]}']}}]\n"
    )
    proc = subprocess.Popen(
        [
            str(PROMETHEUS),
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.2)
        # the scrape manager applies discovered targets in batches (about 5 s): wait for `up`
        while not _query(url, "up"):
            if time.monotonic() > deadline:
                raise TimeoutError("prometheus never scraped the exporter")
            time.sleep(0.5)
        time.sleep(3)  # a few scrapes: rate() needs two samples
        yield url, exporter
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        exporter.close()


def _figures(plan, url: str) -> PrometheusFigures:
    from specml.targets.kubeflow.controller import controller_config

    config = controller_config(plan)
    config["prometheus_url"] = url
    return PrometheusFigures(plan, ControllerConfig.from_json(json.dumps(config)))


def test_real_prometheus_healthy_then_breach_drives_the_controller(prometheus) -> None:
    from kubernetes import client
    from specml.targets.kubeflow.controller import controller_plan

    url, exporter = prometheus
    plan = controller_plan(plan_file(ROOT / "specs" / "fraud.yaml"))  # what the ConfigMap holds
    figures = _figures(plan, url)
    healthy = figures.sample(NEW)
    assert healthy.requests > 0
    assert healthy.error_rate == 0.0
    assert 1.0 <= healthy.p50_latency_ms <= 2.5  # the 1.5 ms requests' bucket
    assert healthy.alert_levels == {"errors": "ok", "score_drift": "ok"}

    kube = KubeApi(_isvc())
    cfg = client.Configuration()
    cfg.host = kube.url
    from specml.runtime.rollout.kubernetes import InferenceServiceStore

    store = InferenceServiceStore(
        client.CustomObjectsApi(client.ApiClient(cfg)), "risk", "fraud-scorer", "fraud-scorer"
    )
    clock = ManualClock(0.0)
    try:
        drive(plan, store, figures, clock, max_ticks=14)  # shadow dropped: 1 % for 2 h, healthy
        state = json.loads(kube.isvc["metadata"]["annotations"]["specml.io/rollout-state"])
        assert (state["status"], state["step_index"]) == ("canary", 0)
        assert state["held_seconds"] == 14 * 300 and state["consecutive_failures"] == 0

        exporter.set(errors_per_request=0.2, latency_ms=20.0)  # the new revision breaks
        time.sleep(4)
        breached = figures.sample(NEW)
        assert breached.error_rate > plan.endpoint.slo.error_rate
        assert figures.sample(OLD).error_rate == 0.0  # the champion's own figures stay clean
        drive(plan, store, figures, clock, max_ticks=3)
        state = json.loads(kube.isvc["metadata"]["annotations"]["specml.io/rollout-state"])
        assert state["status"] == "rolled_back"
        assert kube.isvc["spec"]["predictor"]["canaryTrafficPercent"] == 0
        assert any("error_rate" in b for b in state["last_breaches"])
    finally:
        kube.close()
        exporter.set(errors_per_request=0.0, latency_ms=1.5)


def test_real_prometheus_rollback_alert_level_from_the_drift_gauge(prometheus) -> None:
    url, exporter = prometheus
    plan = plan_file(ROOT / "specs" / "fraud.yaml")
    exporter.set(psi=0.3)  # score_drift: warn 0.1, critical 0.25
    time.sleep(3)
    try:
        assert _figures(plan, url).sample(NEW).alert_levels["score_drift"] == "critical"
    finally:
        exporter.set(psi=0.02)
