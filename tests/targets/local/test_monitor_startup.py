"""The monitor's live figures leave out the 503s a server answers while it is still loading."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

from specml.compiler.api import plan_file
from specml.runtime.serving.metrics import ServingMetrics
from specml.targets.local.monitor_live import Observation, live_figures

ROOT = Path(__file__).resolve().parents[3]


def _serve(body: bytes) -> tuple[http.server.HTTPServer, str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}/metrics"


def test_start_up_503s_are_not_serving_errors() -> None:
    metrics = ServingMetrics()
    labels = ("churn", "1", "infer")
    metrics.requests.labels(*labels, "503").inc(40)  # loading the feature store
    metrics.errors.labels(*labels, "503").inc(40)
    metrics.requests.labels(*labels, "200").inc(100)
    metrics.errors.labels(*labels, "500").inc(1)
    metrics.requests.labels(*labels, "500").inc(1)
    server, url = _serve(metrics.render())
    try:
        plan = plan_file(ROOT / "specs" / "churn.yaml")
        obs = Observation(now=1.0, reference=Path(), refs=None, mstate={}, state={}, holdout={})
        live = live_figures(plan, obs, url)
    finally:
        server.shutdown()
    assert live is not None
    assert live.requests == 101 and abs(live.error_rate - 1 / 101) < 1e-9
