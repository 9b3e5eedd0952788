"""Spec models for alerts, retraining triggers and notifications."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Discriminator, Field, Tag, model_validator
from specml.compiler.spec.types import (
    Cron,
    Duration,
    Fraction,
    Identifier,
    RuleError,
    SecretReference,
    SpecModel,
)

Action = Literal["notify", "rollback", "retrain"]
DRIFT_METRICS = ("psi", "ks")
LATENCY_METRICS = ("p50_latency_ms", "p95_latency_ms", "p99_latency_ms")
METRIC_DROP_RE = re.compile(r"^([a-z0-9_]+)_drop$")
ALERT_METRICS = (*DRIFT_METRICS, *LATENCY_METRICS, "error_rate", "<model metric>_drop")

_ACTION: Any = Field(
    default="notify",
    description="What happens at critical: `notify`, `rollback` the rollout, or `retrain`.",
    examples=["retrain"],
)


class _Thresholds(SpecModel):
    # The JSON Schema says what the validator below enforces: at least one threshold.
    model_config = ConfigDict(
        json_schema_extra={"anyOf": [{"required": ["warn"]}, {"required": ["critical"]}]}
    )

    @model_validator(mode="after")
    def _warn_below_critical(self) -> _Thresholds:
        warn = getattr(self, "warn", None)
        critical = getattr(self, "critical", None)
        if warn is None and critical is None:
            raise RuleError(
                ("critical",),
                "an alert needs `warn`, `critical` or both",
                hint="add `critical: <threshold>`",
            )
        if warn is not None and critical is not None and warn >= critical:
            raise RuleError(
                ("warn",),
                f"warn ({warn:g}) must be below critical ({critical:g})",
                hint="warn is the early signal: make it the smaller threshold",
            )
        return self


class DriftAlert(_Thresholds):
    """Feature or prediction drift against the training data (PSI or Kolmogorov-Smirnov)."""

    metric: Literal["psi", "ks"] = Field(
        description="`psi`: population stability index; `ks`: Kolmogorov-Smirnov statistic.",
        examples=["psi"],
    )
    on: Literal["features", "prediction"] | list[str] = Field(
        default="features",
        description="`features` (every model input), `prediction`, or a list of `view:field`.",
        examples=["features", ["customer_stats:monthly_spend"]],
    )
    warn: float | None = Field(default=None, gt=0, description="Warning threshold.", examples=[0.1])
    critical: float | None = Field(
        default=None, gt=0, description="Critical threshold.", examples=[0.2]
    )
    window: Duration = Field(
        default="1h", description="Window of served traffic compared.", examples=["1h"]
    )
    action: Action = _ACTION
    description: str = Field(
        default="", description="Shown with the alert.", examples=["Inputs shifted."]
    )


class LatencyAlert(_Thresholds):
    """Live latency percentile of the endpoint, in milliseconds."""

    metric: Literal["p50_latency_ms", "p95_latency_ms", "p99_latency_ms"] = Field(
        description="Latency percentile.", examples=["p95_latency_ms"]
    )
    warn: float | None = Field(
        default=None, gt=0, description="Warning threshold (ms).", examples=[100]
    )
    critical: float | None = Field(
        default=None, gt=0, description="Critical threshold (ms).", examples=[200]
    )
    for_: Duration = Field(
        default="5m", alias="for", description="How long the threshold must hold.", examples=["5m"]
    )
    action: Action = _ACTION
    description: str = Field(default="", description="Shown with the alert.", examples=["Slow."])


class ErrorRateAlert(_Thresholds):
    """Share of failed requests."""

    metric: Literal["error_rate"] = Field(description="Error ratio.", examples=["error_rate"])
    warn: Fraction | None = Field(default=None, description="Warning threshold.", examples=[0.005])
    critical: Fraction | None = Field(
        default=None, description="Critical threshold.", examples=[0.02]
    )
    for_: Duration = Field(
        default="5m", alias="for", description="How long the threshold must hold.", examples=["5m"]
    )
    action: Action = _ACTION
    description: str = Field(default="", description="Shown with the alert.", examples=["Errors."])


class MetricDropAlert(_Thresholds):
    """A model metric, measured on delayed labels, dropped below its training holdout value."""

    metric: str = Field(
        pattern=METRIC_DROP_RE.pattern,
        description="`<metric>_drop`, e.g. `roc_auc_drop`: absolute drop from the holdout value.",
        examples=["roc_auc_drop"],
    )
    warn: float | None = Field(default=None, gt=0, description="Warning drop.", examples=[0.02])
    critical: float | None = Field(
        default=None, gt=0, description="Critical drop.", examples=[0.05]
    )
    window: Duration = Field(
        default="1d", description="Window of labelled predictions compared.", examples=["1d"]
    )
    action: Action = _ACTION
    description: str = Field(
        default="", description="Shown with the alert.", examples=["Accuracy fell."]
    )


def alert_kind(value: Any) -> str | None:
    """The alert family for a raw alert mapping (or model), from its `metric`."""
    metric = value.get("metric") if isinstance(value, dict) else getattr(value, "metric", None)
    if not isinstance(metric, str):
        return None
    if metric in DRIFT_METRICS:
        return "drift"
    if metric in LATENCY_METRICS:
        return "latency"
    if metric == "error_rate":
        return "error_rate"
    if METRIC_DROP_RE.match(metric):
        return "metric_drop"
    return None


AlertModel = Annotated[
    Annotated[DriftAlert, Tag("drift")]
    | Annotated[LatencyAlert, Tag("latency")]
    | Annotated[ErrorRateAlert, Tag("error_rate")]
    | Annotated[MetricDropAlert, Tag("metric_drop")],
    Discriminator(
        alert_kind,
        custom_error_type="unknown_alert_metric",
        custom_error_message="unknown or missing alert metric",
    ),
]


class ScheduleTrigger(SpecModel):
    """Retrain on a cron schedule (UTC)."""

    schedule: Cron = Field(description="Cron expression (UTC).", examples=["0 3 * * 1"])


class AlertTrigger(SpecModel):
    """Retrain when an alert reaches critical."""

    alert: Identifier = Field(
        description="Name of an alert under `alerts`.", examples=["feature_drift"]
    )


class NewRowsTrigger(SpecModel):
    """Retrain when this many new labelled rows have arrived since the last training."""

    new_rows: int = Field(ge=1, description="New labelled rows.", examples=[100000])


class MetricDropSpec(SpecModel):
    """A model metric falling by more than `by`."""

    metric: str = Field(description="Model metric.", examples=["roc_auc"])
    by: float = Field(gt=0, description="Absolute drop from the holdout value.", examples=[0.03])


class MetricDropTrigger(SpecModel):
    """Retrain when live model quality drops (needs delayed labels)."""

    metric_drop: MetricDropSpec = Field(
        description="Metric and drop.", examples=[{"metric": "roc_auc", "by": 0.03}]
    )


def _trigger_kind(value: Any) -> str | None:
    keys = set(value) if isinstance(value, dict) else set()
    if isinstance(value, SpecModel):
        keys = set(type(value).model_fields)
    for kind in ("schedule", "alert", "new_rows", "metric_drop"):
        if kind in keys:
            return kind
    return None


TriggerModel = Annotated[
    Annotated[ScheduleTrigger, Tag("schedule")]
    | Annotated[AlertTrigger, Tag("alert")]
    | Annotated[NewRowsTrigger, Tag("new_rows")]
    | Annotated[MetricDropTrigger, Tag("metric_drop")],
    Discriminator(
        _trigger_kind,
        custom_error_type="unknown_trigger",
        custom_error_message="a trigger needs one of: schedule, alert, new_rows, metric_drop",
    ),
]


class RetrainingSection(SpecModel):
    """When to retrain automatically."""

    triggers: list[TriggerModel] = Field(
        min_length=1,
        description="Any trigger starts a retrain (then gates, registry and rollout as usual).",
        examples=[[{"schedule": "0 3 * * 1"}, {"alert": "feature_drift"}, {"new_rows": 100000}]],
    )
    cooldown: Duration = Field(
        default="1h", description="Least time between two automatic retrains.", examples=["6h"]
    )


class WebhookModel(SpecModel):
    """An HTTP endpoint that receives alert events as JSON."""

    url: SecretReference
    allow_private: bool = Field(
        default=False,
        description=(
            "Let the webhook's host resolve to a private, loopback or link-local address (an "
            "in-cluster receiver). Off by default; cloud metadata addresses are always refused."
        ),
        examples=[False],
    )


class NotificationsSection(SpecModel):
    """Where alert events go (always to the alert log; optionally a webhook)."""

    webhook: WebhookModel | None = Field(
        default=None,
        description="Webhook whose URL is a secret reference.",
        examples=[{"url": {"env": "ALERT_WEBHOOK_URL"}}],
    )
