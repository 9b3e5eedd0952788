"""`python -m specml.runtime monitor-service`: drift of live traffic, for KServe's payload logger.

KServe's logger (`spec.predictor.logger`, mode all) POSTs each request and each response as a
CloudEvent in binary mode: the body is the payload, the attributes are `ce-*` headers (`ce-type`
org.kubeflow.serving.inference.request|response, `ce-id` shared by a request and its response,
`ce-inferenceservicename`, `ce-namespace`, `ce-component`, `ce-endpoint`, `ce-time`). Structured
mode (`application/cloudevents+json`) is read too. The service pairs request and response by
`ce-id`, keeps a time window of rows (model inputs by feature, scores), compares it with the
training reference stored beside the model (runtime/monitor/reference.py), and exports on
/metrics the gauges the compiled PrometheusRule reads:
`specml_feature_psi|ks{system, feature}` and `specml_prediction_psi|ks{system, column}`.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
from specml.compiler.ir import Plan

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
SCORE_OUTPUT = "output"
DEFAULT_WINDOW_SECONDS = 3600
MAX_ROWS = 50_000  # newest rows kept per window (memory bound)
MAX_PENDING = 10_000  # requests waiting for their response (oldest dropped)
log = logging.getLogger("specml.monitor")


class EventError(ValueError):
    """A CloudEvent this service cannot read (answered with 400)."""


@dataclass(frozen=True)
class CloudEvent:
    """The attributes this service uses, and the decoded JSON payload."""

    id: str
    type: str
    data: dict[str, Any]
    inference_service: str | None = None


def parse_event(headers: Mapping[str, str], body: bytes) -> CloudEvent:
    """One CloudEvent from an HTTP request, binary (ce-* headers) or structured mode."""
    lower = {k.lower(): v for k, v in headers.items()}
    if lower.get("content-type", "").startswith("application/cloudevents+json"):
        envelope = json.loads(body)
        data = envelope.get("data")
        if data is None and "data_base64" in envelope:
            data = json.loads(base64.b64decode(envelope["data_base64"]))
        attrs = {f"ce-{k}": str(v) for k, v in envelope.items() if not k.startswith("data")}
    else:
        data, attrs = (json.loads(body) if body else None), lower
    if not attrs.get("ce-id") or not attrs.get("ce-type"):
        raise EventError("not a CloudEvent: ce-id and ce-type are required")
    if not isinstance(data, dict):
        raise EventError(f"event {attrs['ce-id']}: the payload is not a JSON object")
    return CloudEvent(attrs["ce-id"], attrs["ce-type"], data, attrs.get("ce-inferenceservicename"))


def tensors(payload: dict[str, Any], key: str) -> dict[str, np.ndarray]:
    """Open Inference Protocol tensors (`inputs` or `outputs`) as name -> [N, ...] arrays."""
    out = {}
    for tensor in payload.get(key) or []:
        shape = [int(d) for d in tensor.get("shape", [])]
        dtype = object if tensor.get("datatype") == "BYTES" else np.float64
        values = np.asarray(tensor.get("data", []), dtype=dtype)
        if dtype is np.float64:
            values = np.asarray([np.nan if v is None else v for v in tensor.get("data", [])], dtype)
        out[tensor["name"]] = values.reshape(shape if shape else (-1,))
    return out


@dataclass
class DriftWindow:
    """Paired rows of one time window: model inputs by feature ref, and the scores."""

    plan: Plan
    window_seconds: float = DEFAULT_WINDOW_SECONDS
    clock: Callable[[], float] = time.time
    rows: deque[tuple[float, dict[str, Any], np.ndarray]] = field(
        default_factory=lambda: deque(maxlen=MAX_ROWS)
    )
    pending: OrderedDict[str, tuple[str, dict[str, np.ndarray]]] = field(
        default_factory=OrderedDict
    )
    events: int = 0

    def receive(self, event: CloudEvent) -> int:
        """Take one event; returns the rows it completed (0 until both halves arrived)."""
        if event.type not in (REQUEST_TYPE, RESPONSE_TYPE):
            return 0
        self.events += 1
        key = "inputs" if event.type == REQUEST_TYPE else "outputs"
        half = (event.type, tensors(event.data, key))
        other = self.pending.pop(event.id, None)
        if other is None or other[0] == event.type:
            self.pending[event.id] = half
            while len(self.pending) > MAX_PENDING:
                self.pending.popitem(last=False)
            return 0
        request, response = (half, other) if event.type == REQUEST_TYPE else (other, half)
        return self.add_pair(request[1], response[1])

    def add_pair(self, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> int:
        """Rows from one request's inputs and its answer's `output` scores; returns how many."""
        scores = outputs.get(SCORE_OUTPUT)
        if scores is None:
            return 0
        scores = scores.reshape(len(scores), -1)
        now = self.clock()
        for i in range(len(scores)):
            row = {}
            for ref in self.plan.training.features:
                column = inputs.get(ref.input_name)
                if column is not None and i < len(column):
                    value = column.reshape(len(column), -1)[i, 0]
                    row[ref.ref] = None if value is None else value
            self.rows.append((now, row, scores[i]))
        return len(scores)

    def frames(self) -> tuple[Any, np.ndarray]:
        """The window's inputs (DataFrame, one column per feature ref) and scores [N, K]."""
        import pandas as pd

        cutoff = self.clock() - self.window_seconds
        while self.rows and self.rows[0][0] < cutoff:
            self.rows.popleft()
        refs = [f.ref for f in self.plan.training.features]
        frame = pd.DataFrame([r for _, r, _ in self.rows], columns=refs)
        for f in self.plan.training.features:
            if f.datatype == "FP32":  # categoricals keep their values (strings, ints)
                frame[f.ref] = pd.to_numeric(frame[f.ref], errors="coerce").astype("float64")
        scores = np.vstack([s for _, _, s in self.rows]) if self.rows else np.zeros((0, 1))
        return frame, scores


class DriftGauges:
    """The Prometheus gauges (own registry) and their refresh from a window and a reference."""

    def __init__(self, plan: Plan, reference: Any) -> None:
        from prometheus_client import CollectorRegistry, Gauge

        self.plan, self.reference = plan, reference
        self.registry = CollectorRegistry()
        self.feature = {
            m: Gauge(
                f"specml_feature_{m}",
                f"Feature drift ({m})",
                ["system", "feature"],
                registry=self.registry,
            )
            for m in ("psi", "ks")
        }
        self.prediction = {
            m: Gauge(
                f"specml_prediction_{m}",
                f"Score drift ({m})",
                ["system", "column"],
                registry=self.registry,
            )
            for m in ("psi", "ks")
        }
        self.rows = Gauge(
            "specml_monitor_window_rows",
            "Rows in the drift window",
            ["system"],
            registry=self.registry,
        )

    def refresh(self, window: DriftWindow) -> None:
        """Recompute drift over the window; a feature with no value in it exports nothing."""
        from specml.runtime.monitor.drift import check_drift
        from specml.runtime.monitor.reference import prediction_columns

        system = self.plan.system.name
        frame, scores = window.frames()
        self.rows.labels(system).set(len(frame))
        for gauges in (*self.feature.values(), *self.prediction.values()):
            gauges.clear()
        if len(frame) == 0:
            return
        report = check_drift(self.reference.features, frame)
        for name, d in report.features.items():
            if d.n_current > 0:
                self.feature["psi"].labels(system, name).set(d.psi)
                self.feature["ks"].labels(system, name).set(d.ks)
        if self.reference.predictions is not None:
            import pandas as pd

            columns = prediction_columns(scores)
            current = pd.DataFrame(scores, columns=columns)
            for name, d in check_drift(self.reference.predictions, current).features.items():
                self.prediction["psi"].labels(system, name).set(d.psi)
                self.prediction["ks"].labels(system, name).set(d.ks)


def window_seconds(plan: Plan) -> float:
    """The longest window a drift alert declares (default 1 h)."""
    windows = [a.window_seconds for a in plan.alerts if a.kind in ("drift", "prediction_drift")]
    return float(max([w for w in windows if w > 0] or [DEFAULT_WINDOW_SECONDS]))


def make_server(window: DriftWindow, gauges: DriftGauges, port: int, host: str = "0.0.0.0"):
    """POST / or /events (CloudEvents), GET /metrics, GET /healthz. Call serve_forever."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            try:
                event = parse_event(dict(self.headers.items()), body)
            except (EventError, ValueError) as exc:
                self._send(400, "application/json", json.dumps({"error": str(exc)}).encode())
                return
            with lock:
                rows = window.receive(event)
            self._send(202, "application/json", json.dumps({"rows": rows}).encode())

        def do_GET(self) -> None:
            if self.path == "/healthz":
                self._send(200, "text/plain", b"ok\n")
            elif self.path == "/metrics":
                with lock:
                    gauges.refresh(window)
                    data = generate_latest(gauges.registry)
                self._send(200, CONTENT_TYPE_LATEST, data)
            else:
                self._send(404, "text/plain", b"not found\n")

        def _send(self, code: int, content_type: str, data: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug(format, *args)

    return ThreadingHTTPServer((host, port), Handler)


def main(argv: list[str] | None = None) -> int:
    """Serve the monitor until killed."""
    from specml.runtime.monitor.reference import ReferenceSet

    parser = argparse.ArgumentParser(prog="python -m specml.runtime monitor-service")
    parser.add_argument("--plan", required=True, type=Path)
    parser.add_argument("--reference", required=True, type=Path, help="the model's folder")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    plan = Plan.from_json(args.plan.read_text())
    reference = ReferenceSet.load(args.reference)
    window = DriftWindow(plan, window_seconds(plan))
    server = make_server(window, DriftGauges(plan, reference), args.port)
    log.info("monitor for %s on :%d (reference %s)", plan.system.name, args.port, args.reference)
    server.serve_forever()
    return 0
