"""Prometheus metrics for the server, in a registry of its own (several servers per process in tests).

With several worker processes (workers.py) every worker runs in prometheus_client's multiprocess
mode (PROMETHEUS_MULTIPROC_DIR, one folder per server): each writes its series to memory-mapped
files there and whichever worker answers /metrics sums them, so counters stay exact.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Fine below 10 ms so p50/p95/p99 SLOs in milliseconds can be read from the buckets.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075,
    0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
QUEUE_BUCKETS = (
    0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

DIFF_BUCKETS = (1e-6, 1e-5, 1e-4, 1e-3, 0.01, 0.05, 0.1, 0.2, 0.5, 1.0)
DELTA_BUCKETS = (
    -0.1, -0.01, -0.005, -0.001, -0.0005, 0.0, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0,
)  # fmt: skip

CONTENT_TYPE = CONTENT_TYPE_LATEST


class ServingMetrics:
    """Every series the server exports; `render()` is the /metrics body."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.request_latency = Histogram(
            "specml_request_latency_seconds",
            "Time from request parsed to response ready, by model, version and endpoint.",
            ["model", "version", "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.requests = Counter(
            "specml_requests_total",
            "Requests answered, by model, version, endpoint and HTTP status code.",
            ["model", "version", "endpoint", "code"],
            registry=r,
        )
        self.errors = Counter(
            "specml_request_errors_total",
            "Requests answered with a 4xx/5xx status, by model, version, endpoint and code.",
            ["model", "version", "endpoint", "code"],
            registry=r,
        )
        self.batch_size = Histogram(
            "specml_batch_size_rows",
            "Rows in each session.run (>1 under concurrency when batching coalesces requests).",
            ["model", "version"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.queue_delay = Histogram(
            "specml_queue_delay_seconds",
            "Time a request waited in the batching queue before its batch started.",
            ["model", "version"],
            buckets=QUEUE_BUCKETS,
            registry=r,
        )
        self.inference_latency = Histogram(
            "specml_inference_latency_seconds",
            "Time inside ONNX Runtime session.run per batch.",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.feature_lookup_latency = Histogram(
            "specml_feature_lookup_latency_seconds",
            "Online feature store read time per predict-by-entity request.",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.entity_lookups = Counter(
            "specml_entity_lookups_total",
            "predict-by-entity rows by outcome: complete (every feature found), partial (some "
            "imputed), not_found (nothing live in the online store: imputed values only).",
            ["model", "version", "outcome"],
            registry=r,
        )
        self.imputed_features = Counter(
            "specml_imputed_features_total",
            "Feature values imputed in predict-by-entity, by feature and reason (missing: absent "
            "or null in the online store; expired: older than the view's TTL).",
            ["model", "version", "feature", "reason"],
            registry=r,
        )
        self.feature_unknown = Counter(
            "specml_feature_unknown_total",
            "Categorical input values outside the model's vocabulary (scored in the unknown "
            "bucket), by feature (the input name).",
            ["model", "version", "feature"],
            registry=r,
        )
        self.feature_missing = Counter(
            "specml_feature_missing_total",
            "Missing input values (null, empty string or NaN; imputed or bucketed by the model), "
            "by feature (the input name).",
            ["model", "version", "feature"],
            registry=r,
        )
        self.model_info = Gauge(
            "specml_model_info",
            "1 for the model version being served, with its execution provider.",
            ["model", "version", "provider"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.refusals = Counter(
            "specml_http_refusals_total",
            "Requests refused by the HTTP layer before routing (framing, limits, timeouts) or "
            "failed there unhandled, by status code and reason.",
            ["code", "reason"],
            registry=r,
        )
        self.fallbacks = Counter(
            "specml_challenger_fallbacks_total",
            "Challenger inferences that failed and were answered by the champion instead (counted "
            "once in specml_requests_total, on the champion; the failure in "
            "specml_request_errors_total on the challenger).",
            ["model", "version", "endpoint"],
            registry=r,
        )

        self.model_role = Gauge(
            "specml_model_role",
            "1 for each loaded version's rollout role (champion | challenger).",
            ["model", "version", "role"],
            registry=r,
            multiprocess_mode="livemax",
        )
        shadow = ["model", "champion_version", "challenger_version"]
        self.shadow_requests = Counter(
            "specml_shadow_requests_total",
            "Requests mirrored to the challenger, by outcome (compared | failed | dropped).",
            [*shadow, "outcome"],
            registry=r,
        )
        self.shadow_diff = Histogram(
            "specml_shadow_prediction_abs_diff",
            "Max |champion - challenger| output per mirrored request.",
            shadow,
            buckets=DIFF_BUCKETS,
            registry=r,
        )
        self.shadow_rows = Counter(
            "specml_shadow_rows_total",
            "Mirrored rows, by whether both models predict the same class (agree true | false).",
            [*shadow, "agree"],
            registry=r,
        )
        self.shadow_latency_delta = Histogram(
            "specml_shadow_latency_delta_seconds",
            "Challenger minus champion inference time per mirrored request.",
            shadow,
            buckets=DELTA_BUCKETS,
            registry=r,
        )

    def count_refusal(self, status: int, reason: str) -> None:
        """One request refused (or failed unhandled) outside the routes."""
        self.refusals.labels(str(status), reason).inc()

    def render(self) -> bytes:
        """The Prometheus text exposition of every series (of every worker, see the docstring)."""
        folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if not folder or not _values_in_files():
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged, folder)
        return generate_latest(merged)


def _values_in_files() -> bool:
    """prometheus_client keeps values in the multiprocess folder (it chose so at import). Not
    the case when PROMETHEUS_MULTIPROC_DIR appeared later: importing feast sets it to a folder of
    its own, which holds none of this process's series."""
    from prometheus_client import values

    return getattr(values.ValueClass, "__name__", "") == "MmapedValue"
