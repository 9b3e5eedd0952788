"""Live serving figures from Prometheus snapshots: histogram quantiles (as PromQL) and error rates."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

LATENCY_METRIC = "specml_request_latency_seconds"
REQUESTS_METRIC = "specml_requests_total"
ERRORS_METRIC = "specml_request_errors_total"
# A challenger attempt that failed and was answered by the champion: counted in the challenger's
# errors but not in its requests, so it is added to the challenger's attempts here.
FALLBACKS_METRIC = "specml_challenger_fallbacks_total"


@dataclass(frozen=True)
class HistogramSnapshot:
    """Cumulative bucket counts of one histogram at one moment: (upper bound `le`, count)."""

    buckets: tuple[tuple[float, float], ...]  # sorted by le, last one +Inf
    total: float = 0.0  # _sum

    @property
    def count(self) -> float:
        return self.buckets[-1][1] if self.buckets else 0.0

    def minus(self, earlier: HistogramSnapshot) -> HistogramSnapshot:
        """The observations between two snapshots (a counter reset drops `earlier`, like rate())."""
        if not earlier.buckets or earlier.count > self.count:
            return self
        before = dict(earlier.buckets)
        return HistogramSnapshot(
            tuple((le, c - before.get(le, 0.0)) for le, c in self.buckets),
            self.total - earlier.total,
        )


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """PromQL's histogram_quantile over cumulative buckets: linear inside the bucket holding rank q.

    As in Prometheus: NaN with no observations; the first bucket's lower bound is 0 (when its upper
    bound is positive); a rank in the +Inf bucket returns the largest finite upper bound.
    """
    if not buckets:
        return math.nan
    ordered = sorted(buckets)
    if not math.isinf(ordered[-1][0]):
        return math.nan  # Prometheus needs the +Inf bucket
    total = ordered[-1][1]
    if total <= 0:
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    rank = q * total
    for i, (le, cum) in enumerate(ordered):
        if cum >= rank:
            if math.isinf(le):
                return ordered[i - 1][0] if i > 0 else math.nan
            lower, below = (ordered[i - 1][0], ordered[i - 1][1]) if i > 0 else (0.0, 0.0)
            if i == 0 and le <= 0:
                return le
            in_bucket = cum - below
            if in_bucket <= 0:
                return le
            return lower + (le - lower) * (rank - below) / in_bucket
    return ordered[-1][0]


@dataclass(frozen=True)
class ServingSnapshot:
    """One scrape of one model version: its latency histogram and request/error counters."""

    latency: HistogramSnapshot
    requests: float
    errors: float
    at: float = 0.0

    def minus(self, earlier: ServingSnapshot) -> ServingSnapshot:
        """Traffic between two scrapes (counter resets fall back to the later scrape)."""
        reset = earlier.requests > self.requests
        return ServingSnapshot(
            self.latency.minus(earlier.latency),
            self.requests if reset else self.requests - earlier.requests,
            self.errors if reset else self.errors - earlier.errors,
            self.at,
        )


@dataclass(frozen=True)
class LiveFigures:
    """What SLOs and alerts are judged on: latency percentiles (ms), error rate, traffic."""

    p50_latency_ms: float | None = None
    p95_latency_ms: float | None = None
    p99_latency_ms: float | None = None
    error_rate: float | None = None
    requests: float = 0.0
    alert_levels: Mapping[str, str] = field(default_factory=dict)

    def get(self, metric: str) -> float | None:
        """A figure by its spec name (`p95_latency_ms`, `error_rate`, ...)."""
        return getattr(self, metric, None)

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return {
            "p50_latency_ms": self.p50_latency_ms,
            "p95_latency_ms": self.p95_latency_ms,
            "p99_latency_ms": self.p99_latency_ms,
            "error_rate": self.error_rate,
            "requests": self.requests,
            "alert_levels": dict(self.alert_levels),
        }


def figures(window: ServingSnapshot, alert_levels: Mapping[str, str] | None = None) -> LiveFigures:
    """Percentiles and error rate of one window of traffic (None where there was no traffic)."""

    def ms(q: float) -> float | None:
        v = histogram_quantile(q, window.latency.buckets)
        return None if math.isnan(v) else v * 1000.0

    return LiveFigures(
        p50_latency_ms=ms(0.50),
        p95_latency_ms=ms(0.95),
        p99_latency_ms=ms(0.99),
        error_rate=(window.errors / window.requests) if window.requests > 0 else None,
        requests=window.requests,
        alert_levels=dict(alert_levels or {}),
    )


def parse_exposition(
    text: str, labels: Mapping[str, str] | None = None, at: float = 0.0
) -> ServingSnapshot:
    """The server's /metrics text -> one snapshot, summed over series matching `labels`."""
    from prometheus_client.parser import text_string_to_metric_families

    want = dict(labels or {})
    buckets: dict[float, float] = {}
    total = requests = errors = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if any(sample.labels.get(k) != v for k, v in want.items()):
                continue
            if sample.name == f"{LATENCY_METRIC}_bucket":
                le = float(sample.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + sample.value
            elif sample.name == f"{LATENCY_METRIC}_sum":
                total += sample.value
            elif sample.name in (REQUESTS_METRIC, FALLBACKS_METRIC):
                requests += sample.value
            elif sample.name == ERRORS_METRIC:
                errors += sample.value
    return ServingSnapshot(
        HistogramSnapshot(tuple(sorted(buckets.items())), total), requests, errors, at
    )
