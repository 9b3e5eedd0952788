"""CloudWatch alarms for the endpoint: SLO and latency/error alerts, and which roll back a deploy.

SageMaker publishes `ModelLatency` in MICROseconds (the spec says milliseconds) and
`Invocation5XXErrors` / `Invocations` as counts, so the error rate is metric math.
Drift alerts read `specml/Drift` `AlertValue{System, Alert}`, which the scheduled drift job
(runtime/monitor/cloudwatch.py, over the endpoint's data capture) publishes; they reach a level
AT the threshold, like the local monitor. Model-metric alerts have no CloudWatch metric: they are
reported, not dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from specml.compiler.errors import Diagnostic
from specml.compiler.ir import Alert, Plan
from specml.targets.sagemaker.naming import Names, tags

NAMESPACE = "AWS/SageMaker"
DRIFT_NAMESPACE = "specml/Drift"  # runtime/monitor/cloudwatch.NAMESPACE
DRIFT_METRIC = "AlertValue"
MIN_DRIFT_PERIOD, MAX_DRIFT_PERIOD = 600, 86400  # the drift job's schedule: 10 min .. 1 day
MAX_ROLLBACK_ALARMS = 10  # AutoRollbackConfig.Alarms holds 1..10 alarms
_PERCENTILE = {"p50_latency_ms": "p50", "p95_latency_ms": "p95", "p99_latency_ms": "p99"}

Severity = Literal["warn", "critical"]


@dataclass(frozen=True)
class AlarmSpec:
    """One CloudWatch metric alarm, target-neutral enough to test without Pulumi."""

    name: str
    description: str
    kind: Literal["latency", "error_rate", "drift"]
    threshold: float  # microseconds for latency, a ratio (0..1) for error rate, PSI/KS for drift
    percentile: str | None  # ExtendedStatistic for latency alarms, e.g. "p95"
    period_seconds: int
    evaluation_periods: int
    severity: Severity
    source: str  # "slo" or the alert id
    rollback: bool  # named in the endpoint's auto-rollback configuration
    tags: dict[str, str] = field(default_factory=dict)
    comparison: str = "GreaterThanThreshold"


def drift_period(plan: Plan) -> int:
    """How often the drift job runs (and each drift alarm's period): the shortest drift window."""
    windows = [a.window_seconds for a in plan.alerts if a.kind in ("drift", "prediction_drift")]
    shortest = min([w for w in windows if w > 0] or [3600])
    return min(max(_period(shortest), MIN_DRIFT_PERIOD), MAX_DRIFT_PERIOD)


def _drift_alarms(
    plan: Plan, alert: Alert, names: Names, rollback_ids: set[str]
) -> list[AlarmSpec]:
    period = drift_period(plan)
    levels = [
        (sev, v) for sev, v in (("warn", alert.warn), ("critical", alert.critical)) if v is not None
    ]
    rollback_level = levels[-1][0] if levels else None
    wants_rollback = alert.id in rollback_ids or alert.action == "rollback"
    # periods x period may not exceed a day
    periods = min(max(1, math.ceil(alert.for_seconds / period)), max(1, 86400 // period))
    return [
        AlarmSpec(
            name=names.alarm(alert.id, severity),
            description=alert.description
            or f"{plan.system.name}: {alert.metric} drift at or above {value:g}",
            kind="drift",
            threshold=value,
            percentile=None,
            period_seconds=period,
            evaluation_periods=periods,
            severity=severity,
            source=alert.id,
            rollback=wants_rollback and severity == rollback_level,
            comparison="GreaterThanOrEqualToThreshold",
        )
        for severity, value in levels
    ]


def _period(seconds: int) -> int:
    """CloudWatch periods for endpoint metrics: whole minutes, at least one."""
    return max(60, int(math.ceil(seconds / 60.0)) * 60)


def _slo_alarms(plan: Plan, names: Names) -> list[AlarmSpec]:
    slo = plan.endpoint.slo
    rollout = plan.rollout
    period = _period(rollout.analysis_interval_seconds) if rollout else 60
    periods = max(1, rollout.failure_limit) if rollout else 3
    rollback = plan.slo_breach_rolls_back()
    out: list[AlarmSpec] = []
    for metric, pct in _PERCENTILE.items():
        ms = getattr(slo, metric)
        if ms is None:
            continue
        out.append(
            AlarmSpec(
                name=names.alarm("slo", pct, "latency"),
                description=f"{plan.system.name}: {pct} model latency above the SLO of {ms:g} ms",
                kind="latency",
                threshold=ms * 1000.0,
                percentile=pct,
                period_seconds=period,
                evaluation_periods=periods,
                severity="critical",
                source="slo",
                rollback=rollback,
            )
        )
    if slo.error_rate is not None:
        out.append(
            AlarmSpec(
                name=names.alarm("slo", "error-rate"),
                description=f"{plan.system.name}: 5XX error ratio above the SLO of {slo.error_rate:g}",
                kind="error_rate",
                threshold=slo.error_rate,
                percentile=None,
                period_seconds=period,
                evaluation_periods=periods,
                severity="critical",
                source="slo",
                rollback=rollback,
            )
        )
    return out


def _alert_alarms(
    plan: Plan, alert: Alert, names: Names, rollback_ids: set[str]
) -> list[AlarmSpec]:
    candidates: tuple[tuple[Severity, float | None], ...] = (
        ("warn", alert.warn),
        ("critical", alert.critical),
    )
    levels = [(sev, v) for sev, v in candidates if v is not None]
    # The most severe level is the one that rolls a deploy back; a warning only notifies.
    rollback_level = levels[-1][0] if levels else None
    wants_rollback = alert.id in rollback_ids or alert.action == "rollback"
    out: list[AlarmSpec] = []
    for severity, value in levels:
        if alert.kind == "latency":
            pct = _PERCENTILE[alert.metric]
            kind: Literal["latency", "error_rate"] = "latency"
            threshold, unit = value * 1000.0, f"{value:g} ms"
        else:
            pct, kind, threshold, unit = None, "error_rate", value, f"{value:g}"
        out.append(
            AlarmSpec(
                name=names.alarm(alert.id, severity),
                description=alert.description or f"{plan.system.name}: {alert.metric} above {unit}",
                kind=kind,
                threshold=threshold,
                percentile=pct,
                period_seconds=60,
                evaluation_periods=max(1, math.ceil(alert.for_seconds / 60)),
                severity=severity,
                source=alert.id,
                rollback=wants_rollback and severity == rollback_level,
            )
        )
    return out


def alarm_specs(plan: Plan, names: Names | None = None) -> tuple[list[AlarmSpec], list[Diagnostic]]:
    """Every alarm for the Plan, in a stable order, and the alerts CloudWatch cannot watch."""
    names = names or Names.for_plan(plan)
    rollback_ids = set(plan.rollback_alert_ids())
    specs = _slo_alarms(plan, names)
    diags: list[Diagnostic] = []
    for alert in plan.alerts:
        if alert.kind in ("latency", "error_rate"):
            specs.extend(_alert_alarms(plan, alert, names, rollback_ids))
            continue
        if alert.kind in ("drift", "prediction_drift"):
            specs.extend(_drift_alarms(plan, alert, names, rollback_ids))
            continue
        rolls_back = alert.id in rollback_ids
        diags.append(
            Diagnostic(
                f"sagemaker: alert '{alert.id}' ({alert.metric}) has no CloudWatch metric; no alarm is "
                + (
                    "created and SageMaker auto-rollback cannot react to it"
                    if rolls_back
                    else "created for it"
                ),
                path=("rollout", "rollback_when") if rolls_back else ("alerts", alert.id),
                hint="export the live metric from your delayed-label job to CloudWatch and alarm "
                "on it, or use --target local, whose monitor joins delayed labels",
                severity="warning",
                stage="unsupported",
                code="sagemaker_alert_unsupported",
            )
        )
    if plan.rollout and not any(s.rollback for s in specs) and plan.rollout.rollback_when:
        diags.append(
            Diagnostic(
                "sagemaker: no rollback condition maps to a CloudWatch alarm; deployments will not "
                "roll back automatically",
                path=("rollout", "rollback_when"),
                severity="warning",
                stage="unsupported",
                code="sagemaker_no_rollback_alarm",
            )
        )
    rolling = [s for s in specs if s.rollback]
    if len(rolling) > MAX_ROLLBACK_ALARMS:
        diags.append(
            Diagnostic(
                f"sagemaker: {len(rolling)} alarms would roll back a deploy; SageMaker takes at most "
                f"{MAX_ROLLBACK_ALARMS}, the rest only notify",
                path=("rollout", "rollback_when"),
                severity="warning",
                stage="unsupported",
                code="sagemaker_rollback_alarm_limit",
            )
        )
        keep = {s.name for s in rolling[:MAX_ROLLBACK_ALARMS]}
        specs = [s if s.name in keep or not s.rollback else _no_rollback(s) for s in specs]
    return [_tagged(plan, s) for s in specs], diags


def _no_rollback(spec: AlarmSpec) -> AlarmSpec:
    return AlarmSpec(**{**spec.__dict__, "rollback": False})


def _tagged(plan: Plan, spec: AlarmSpec) -> AlarmSpec:
    return AlarmSpec(
        **{
            **spec.__dict__,
            "tags": tags(plan, severity=spec.severity, **{"specml:alert": spec.source}),
        }
    )


def rollback_alarm_names(specs: list[AlarmSpec]) -> list[str]:
    """The alarms named in the endpoint's auto-rollback configuration, in order."""
    return [s.name for s in specs if s.rollback]
