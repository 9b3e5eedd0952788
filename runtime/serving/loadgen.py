"""A bounded, loopback-only load generator for rollout drills: every answer is recorded.

`LoadGenerator(url, rate_per_s=200, concurrency=4)` sends v2 JSON infer requests from
`concurrency` threads (keep-alive connections) at no more than `rate_per_s` in total, until
`stop()`, which returns a `LoadReport`: requests sent, answers per model version, failures.
Requests carry one named input per model input, as the model's metadata lists them (random
numbers for FP32, small integers for INT64, short strings for BYTES); when the metadata cannot
be read they fall back to a `features` matrix of `features` columns.
It refuses any host that is not loopback, so a drill can never load someone else's server.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import numpy as np


@dataclass
class LoadReport:
    """What the clients saw."""

    sent: int = 0
    answered: int = 0
    failed: int = 0
    by_version: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def p(self, q: float) -> float:
        """A client-side latency percentile (ms)."""
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


def _is_loopback(host: str) -> bool:
    try:
        return all(
            ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(host, None)
        )
    except (OSError, ValueError):
        return False


def _request_bodies(inputs: list[dict] | None, features: int, seed: int) -> list[str]:
    """256 JSON `"inputs": [...]` fragments: named inputs per the metadata, else a matrix."""
    rng = np.random.default_rng(seed)
    bodies = []
    for _ in range(256):
        if inputs is None:
            row = rng.normal(size=features).astype(np.float32).tolist()
            tensors = [
                {"name": "features", "shape": [1, features], "datatype": "FP32", "data": row}
            ]
        else:
            tensors = []
            for spec in inputs:
                if spec["datatype"] == "BYTES":
                    value: object = f"v{int(rng.integers(0, 8))}"
                elif spec["datatype"] == "INT64":
                    value = int(rng.integers(0, 8))
                else:
                    value = float(np.float32(rng.normal()))
                tensors.append(
                    {
                        "name": spec["name"],
                        "shape": [1, 1],
                        "datatype": spec["datatype"],
                        "data": [value],
                    }
                )
        bodies.append('"inputs":' + json.dumps(tensors))
    return bodies


class LoadGenerator:
    """Threads sending inference requests at a capped rate to a loopback server."""

    def __init__(
        self,
        base_url: str,
        model: str = "churn",
        features: int = 5,
        rate_per_s: float = 200.0,
        concurrency: int = 4,
        timeout_s: float = 10.0,
        seed: int = 0,
    ) -> None:
        parts = urlsplit(base_url)
        if not parts.hostname or not _is_loopback(parts.hostname):
            raise ValueError(f"the load generator only targets loopback servers, not {base_url!r}")
        if not 0 < rate_per_s <= 5000 or not 0 < concurrency <= 64:
            raise ValueError("rate_per_s must be in (0, 5000] and concurrency in (0, 64]")
        self.host, self.port = parts.hostname, parts.port or 80
        self.path = f"/v2/models/{model}/infer"
        self.interval = concurrency / rate_per_s  # per worker
        self.concurrency = concurrency
        self.timeout = timeout_s
        self.bodies = _request_bodies(self._model_inputs(model), features, seed)
        self.report = LoadReport()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._work, args=(i,), daemon=True, name=f"load-{i}")
            for i in range(concurrency)
        ]
        self._started = 0.0

    def _model_inputs(self, model: str) -> list[dict] | None:
        """The model's inputs from its metadata (None: unreadable, send the matrix form)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request("GET", f"/v2/models/{model}")
            response = conn.getresponse()
            raw = response.read()
            if response.status != 200:
                return None
            inputs = json.loads(raw).get("inputs")
        except (OSError, ValueError):
            return None
        finally:
            conn.close()
        return inputs if isinstance(inputs, list) and inputs else None

    def start(self) -> LoadGenerator:
        self._started = time.perf_counter()
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> LoadReport:
        """Stop sending, wait for in-flight requests, return the report."""
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout + 5)
        self.report.seconds = time.perf_counter() - self._started
        return self.report

    def __enter__(self) -> LoadGenerator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _work(self, worker: int) -> None:
        conn: http.client.HTTPConnection | None = None
        next_at = time.perf_counter() + worker * self.interval / self.concurrency
        i = 0
        while not self._stop.is_set():
            delay = next_at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            next_at += self.interval
            inputs = self.bodies[(worker * 7919 + i) % len(self.bodies)]
            body = f'{{"id":"w{worker}-{i}",{inputs}}}'
            i += 1
            with self._lock:
                self.report.sent += 1
            start = time.perf_counter()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
                conn.request("POST", self.path, body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                raw = response.read()
                if response.status != 200:
                    raise RuntimeError(f"HTTP {response.status}: {raw[:200]!r}")
                version = str(json.loads(raw)["model_version"])
            except Exception as exc:  # every failure is counted, the worker carries on
                with self._lock:
                    self.report.failed += 1
                    self.report.errors.append(f"{type(exc).__name__}: {exc}")
                if conn is not None:
                    conn.close()
                conn = None
                continue
            with self._lock:
                self.report.answered += 1
                self.report.by_version[version] += 1
                self.report.latencies_ms.append((time.perf_counter() - start) * 1000.0)
        if conn is not None:
            conn.close()
