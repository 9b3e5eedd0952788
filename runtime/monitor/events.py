"""Alert events: the level of one alert at one moment, and drift alerts evaluated from a report."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from specml.compiler.ir import Alert
from specml.runtime.monitor.drift import PREDICTION, DriftReport

Level = Literal["ok", "warn", "critical"]
LEVEL_ORDER: dict[str, int] = {"ok": 0, "warn": 1, "critical": 2}


@dataclass(frozen=True)
class AlertEvent:
    """One alert's level with the value that set it (and per-feature values for drift)."""

    alert_id: str
    kind: str
    metric: str
    level: Level
    value: float | None
    threshold: float | None  # the threshold crossed (critical or warn), None when ok
    action: str
    at: float  # unix seconds
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def level_for(alert: Alert, value: float | None) -> tuple[Level, float | None]:
    """The level a value reaches on an alert's thresholds (higher is worse), and that threshold."""
    if value is None:
        return "ok", None
    if alert.critical is not None and value >= alert.critical:
        return "critical", alert.critical
    if alert.warn is not None and value >= alert.warn:
        return "warn", alert.warn
    return "ok", None


def evaluate_drift_alerts(
    alerts: Iterable[Alert],
    features: DriftReport | None,
    predictions: DriftReport | None = None,
    at: float = 0.0,
) -> list[AlertEvent]:
    """One event per drift / prediction_drift alert: the worst feature's PSI or KS decides."""
    events = []
    for alert in alerts:
        if alert.kind == "drift":
            report, names = features, list(alert.features)
        elif alert.kind == "prediction_drift":
            report = predictions
            names = [
                n for n in (predictions.features if predictions else {}) if n.startswith(PREDICTION)
            ]
        else:
            continue
        if report is None:
            continue
        missing = [n for n in names if n not in report.features]
        values = {n: report.value(n, alert.metric) for n in names if n in report.features}
        worst = max(values, key=values.__getitem__) if values else None
        value = values[worst] if worst else None
        level, threshold = level_for(alert, value)
        details: dict[str, Any] = {"values": values, "worst": worst}
        if missing:
            details["missing"] = missing
        events.append(
            AlertEvent(
                alert.id,
                alert.kind,
                alert.metric,
                level,
                value,
                threshold,
                alert.action,
                at,
                details,
            )
        )
    return events
