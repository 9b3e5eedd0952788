"""Alert evaluation with `for` persistence, the alert log, the webhook, and action callbacks.

Latency and error-rate alerts are judged on `LiveFigures` (from Prometheus snapshots), metric_drop
alerts on holdout-vs-delayed-label metric values, drift alerts on a `DriftReport`. A breach must
last `for_seconds` before the alert fires (Prometheus' pending -> firing); a level change is
written to `<workdir>/alerts.jsonl`, POSTed to the webhook when the Plan names one and its secret
resolves, and a newly critical alert calls the callback of its action (notify/rollback/retrain).
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from specml.compiler.ir import Alert, Plan, SecretRef
from specml.compiler.metrics import METRICS
from specml.runtime.monitor.drift import DriftReport
from specml.runtime.monitor.events import (
    LEVEL_ORDER,
    AlertEvent,
    Level,
    evaluate_drift_alerts,
    level_for,
)
from specml.runtime.monitor.live import LiveFigures

ALERT_LOG = "alerts.jsonl"
ActionCallback = Callable[[AlertEvent], None]


def resolve_secret(ref: SecretRef | None, env: Mapping[str, str] | None = None) -> str | None:
    """A secret's value at run time: `env` refs read the environment; `secret` refs read
    `SPECML_SECRET_<NAME>` (the local target's stand-in for a secret store). None if unset."""
    if ref is None:
        return None
    source = os.environ if env is None else env
    name = ref.name if ref.kind == "env" else "SPECML_SECRET_" + ref.name.upper().replace("-", "_")
    return source.get(name) or None


def metric_drop(metric: str, holdout: float | None, live: float | None) -> float | None:
    """How far a live metric fell from its holdout value, in its worse direction (>0 is worse)."""
    if holdout is None or live is None:
        return None
    info = METRICS.get(metric)
    higher_is_better = info.higher_is_better if info else True
    return holdout - live if higher_is_better else live - holdout


@dataclass
class _Pending:
    level: Level = "ok"  # level currently breached (not yet firing if for_seconds not reached)
    since: float | None = None


@dataclass
class AlertMonitor:
    """Keeps each alert's level over time and emits events when a level changes."""

    plan: Plan
    workdir: Path
    callbacks: Mapping[str, ActionCallback] = field(default_factory=dict)
    env: Mapping[str, str] | None = None
    webhook_timeout_s: float = 2.0
    firing: dict[str, Level] = field(default_factory=dict)
    _pending: dict[str, _Pending] = field(default_factory=dict)

    def observe(
        self,
        now: float,
        live: LiveFigures | None = None,
        drift: DriftReport | None = None,
        prediction_drift: DriftReport | None = None,
        holdout_metrics: Mapping[str, float] | None = None,
        live_metrics: Mapping[str, float] | None = None,
    ) -> list[AlertEvent]:
        """Evaluate every alert that has data at `now`; returns the events whose level changed."""
        raw: list[AlertEvent] = evaluate_drift_alerts(
            self.plan.alerts, drift, prediction_drift, at=now
        )
        for alert in self.plan.alerts:
            value: float | None
            if alert.kind in ("latency", "error_rate") and live is not None:
                value = live.get(alert.metric)
            elif (
                alert.kind == "metric_drop"
                and holdout_metrics is not None
                and live_metrics is not None
            ):
                value = metric_drop(
                    alert.metric, holdout_metrics.get(alert.metric), live_metrics.get(alert.metric)
                )
            else:
                continue
            level, threshold = level_for(alert, value)
            raw.append(
                AlertEvent(
                    alert.id, alert.kind, alert.metric, level, value, threshold, alert.action, now
                )
            )
        changed = []
        for event in raw:
            fired = self._persist(self.plan.alert(event.alert_id), event, now)
            if fired is not None:
                changed.append(fired)
        for event in changed:
            self.emit(event)
        return changed

    def snapshot(self) -> dict[str, Any]:
        """Firing levels and pending breaches, JSON-ready (to carry state across monitor runs)."""
        return {
            "firing": dict(self.firing),
            "pending": {k: [p.level, p.since] for k, p in self._pending.items()},
        }

    def restore(self, saved: Mapping[str, Any]) -> None:
        """Continue from a `snapshot()`."""
        self.firing.update(saved.get("firing", {}))
        for alert_id, (level, since) in saved.get("pending", {}).items():
            self._pending[alert_id] = _Pending(level, since)

    def _persist(self, alert: Alert, event: AlertEvent, now: float) -> AlertEvent | None:
        """Apply `for_seconds`: a worse level fires once it has held that long; better at once."""
        pending = self._pending.setdefault(alert.id, _Pending())
        if event.level != pending.level or pending.since is None:
            pending.level, pending.since = event.level, now
        current = self.firing.get(alert.id, "ok")
        if event.level == current:
            return None
        improving = LEVEL_ORDER[event.level] < LEVEL_ORDER[current]
        if improving or now - pending.since >= alert.for_seconds:
            self.firing[alert.id] = event.level
            return event
        return None

    def emit(self, event: AlertEvent) -> None:
        """Log the event, POST it to the webhook, and run its action when it turns critical."""
        line = event.to_json()
        line["system"] = self.plan.system.name
        if self.plan.notifications.log_alerts:
            self.workdir.mkdir(parents=True, exist_ok=True)
            with open(self.workdir / ALERT_LOG, "a", encoding="utf-8") as log:
                log.write(json.dumps(line, sort_keys=True) + "\n")
        url = resolve_secret(self.plan.notifications.webhook_url, self.env)
        if url:
            # A failing notification never stops the alert's action (post_webhook never raises).
            post_webhook(
                url,
                line,
                self.webhook_timeout_s,
                self.workdir / ALERT_LOG,
                allow_private=self.plan.notifications.webhook_allow_private,
            )
        if event.level == "critical":
            callback = self.callbacks.get(event.action)
            if callback is not None:
                callback(event)


# Cloud instance-metadata endpoints: refused even when private addresses are allowed.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254")
)


class WebhookRefused(ValueError):
    """A webhook URL the monitor will not call (scheme or address)."""


def check_webhook_url(url: str, allow_private: bool = False) -> list[str]:
    """The addresses a webhook URL may be called at; raises `WebhookRefused` for a scheme other
    than http(s), a host that does not resolve, a metadata address, or (unless allowed) a
    private, loopback, link-local or otherwise non-public address."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise WebhookRefused(f"malformed webhook URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise WebhookRefused(f"webhook URL scheme {parts.scheme or '(none)'!r} is not http(s)")
    if not parts.hostname:
        raise WebhookRefused("webhook URL has no host")
    default = 443 if parts.scheme == "https" else 80
    try:
        infos = socket.getaddrinfo(parts.hostname, port or default, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as exc:
        raise WebhookRefused(f"webhook host {parts.hostname!r} does not resolve: {exc}") from None
    addresses = sorted({str(info[4][0]).split("%")[0] for info in infos})
    for text in addresses:
        ip = ipaddress.ip_address(text)
        mapped = getattr(ip, "ipv4_mapped", None)
        ip = mapped or ip
        if ip in METADATA_ADDRESSES:
            raise WebhookRefused(f"webhook host resolves to the metadata address {ip}")
        if not allow_private and not ip.is_global:
            raise WebhookRefused(
                f"webhook host resolves to the non-public address {ip}; set "
                "notifications.webhook.allow_private: true for an in-cluster receiver"
            )
    return addresses


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A webhook answer that redirects is an answer; following it could reach a refused host."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def post_webhook(
    url: str,
    payload: Mapping[str, Any],
    timeout_s: float,
    log_path: Path | None,
    allow_private: bool = False,
) -> bool:
    """POST one event as JSON to an http(s) URL on an allowed address; any failure (a refused
    URL included) is logged, never raised, so monitoring and the alert's action go on."""
    body = json.dumps(payload, sort_keys=True).encode()
    try:
        check_webhook_url(url, allow_private)
        request = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        with _OPENER.open(request, timeout=timeout_s) as response:  # noqa: S310
            return 200 <= response.status < 300
    except Exception as exc:  # a notification must never stop the monitor
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(log_path, "a", encoding="utf-8") as log:
                note = {
                    "webhook_error": type(exc).__name__,
                    "detail": str(exc)[:200],
                    "alert_id": payload.get("alert_id"),
                }
                log.write(json.dumps(note, sort_keys=True) + "\n")
        return False


def read_alert_log(workdir: Path) -> list[dict[str, Any]]:
    """Every event in the alert log, oldest first (webhook error notes left out)."""
    path = Path(workdir) / ALERT_LOG
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if "alert_id" in r and "level" in r]
