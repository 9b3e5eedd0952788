"""One monitoring pass's observations, the live server's figures, and due retraining."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from specml.compiler.errors import TargetError
from specml.compiler.ir import Plan
from specml.runtime.layout import Workdir
from specml.targets.base import MonitorOptions

RETRAIN_STATE = "retrain_state.json"


@dataclass
class Observation:
    """What one pass has seen so far, phase by phase."""

    now: float
    reference: Path
    refs: Any  # ReferenceSet
    mstate: dict[str, Any]  # monitor/state.json: alert levels, the last /metrics scrape
    state: dict[str, Any]  # the local target's state.json
    holdout: dict[str, float]
    frame: Any = None  # the logged request window
    drift: Any = None
    prediction_drift: Any = None
    live: Any = None
    live_metrics: dict[str, float] | None = None
    events: list[Any] = field(default_factory=list)
    levels: dict[str, str] = field(default_factory=dict)
    actions: list[dict[str, Any]] = field(default_factory=list)
    retrain_requests: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    retrained: dict[str, Any] | None = None

    @property
    def names(self) -> list[str]:
        """The reference's feature names."""
        return list(self.refs.features.feature_names)


NOT_READY = 'code="503"'


def _scrape(url: str, at: float) -> Any | None:
    """One /metrics snapshot, or None when the server does not answer.

    503s are left out: the server answers them while it loads the model or its feature store
    ("not ready, retry"), which readiness reports; counting them would turn every start-up into
    an error-rate alert."""
    from specml.runtime.monitor.live import parse_exposition

    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:  # noqa: S310 (loopback)
            text = response.read().decode()
    except (OSError, ValueError):
        return None
    answered = "\n".join(line for line in text.splitlines() if NOT_READY not in line)
    try:
        return parse_exposition(answered + "\n", at=at)
    except ValueError:
        return None


def _snapshot_json(snap: Any) -> dict[str, Any]:
    return {
        "buckets": [list(b) for b in snap.latency.buckets],
        "sum": snap.latency.total,
        "requests": snap.requests,
        "errors": snap.errors,
        "at": snap.at,
    }


def _snapshot_from(raw: dict[str, Any] | None) -> Any | None:
    from specml.runtime.monitor.live import HistogramSnapshot, ServingSnapshot

    if not raw:
        return None
    buckets = tuple((float(le), float(c)) for le, c in raw["buckets"])
    return ServingSnapshot(
        HistogramSnapshot(buckets, raw["sum"]), raw["requests"], raw["errors"], raw["at"]
    )


def live_figures(plan: Plan, obs: Observation, metrics_url: str | None) -> Any | None:
    """The live server's figures since the previous pass's scrape (None: no server answering)."""
    from specml.runtime.monitor.live import figures

    local = plan.targets.local
    snap = _scrape(metrics_url or f"http://{local.host}:{local.port}/metrics", obs.now)
    if snap is None:
        return None
    before = _snapshot_from(obs.mstate.get("last_scrape"))
    obs.mstate["last_scrape"] = _snapshot_json(snap)
    return figures(snap.minus(before) if before is not None else snap)


def _training_watermark(wd: Workdir, state: dict[str, Any]) -> float | None:
    """Newest event time (unix s) in the training set of the newest applied run, if it is on disk."""
    import pandas as pd
    from specml.runtime.steps.common import TIMESTAMP

    runs = [r for r in state.get("runs", []) if r.get("status") == "applied" and r.get("run_id")]
    if not runs:
        return None
    files = sorted(wd.run(runs[-1]["run_id"]).glob("build_training_set/*.parquet"))
    if not files:
        return None
    ts = pd.to_datetime(pd.read_parquet(files[0], columns=[TIMESTAMP])[TIMESTAMP], utc=True)
    return float(ts.max().timestamp()) if len(ts) else None


def _last_training_at(state: dict[str, Any]) -> float | None:
    runs = [r for r in state.get("runs", []) if r.get("status") == "applied" and r.get("started")]
    return datetime.fromisoformat(runs[-1]["started"]).timestamp() if runs else None


def _count_new_rows(plan: Plan, base: Path, wd: Workdir, rstate: Any, obs: Observation) -> None:
    """Rows newer than the last training set (for `new_rows` triggers)."""
    from specml.runtime.monitor.triggers import count_new_rows, data_watermark

    try:
        trained = _training_watermark(wd, obs.state)
        if trained is not None:
            rstate.data_watermark = trained
        elif rstate.data_watermark is None:
            rstate.data_watermark = data_watermark(plan, base)
        rstate.new_rows = count_new_rows(plan, base, rstate.data_watermark)
    except (TargetError, KeyError, ValueError, OSError):
        rstate.new_rows = None


def retrain_if_due(
    plan: Plan,
    base: Path,
    wd: Workdir,
    obs: Observation,
    opts: MonitorOptions,
    retrain: Callable[..., dict[str, Any]],
) -> None:
    """Due triggers (or an alert's retrain action outside the cooldown) retrain once."""
    from specml.runtime.monitor.triggers import RetrainState, data_watermark, due_triggers

    path = wd.monitor / RETRAIN_STATE
    rstate = RetrainState.load(path)
    rstate.alert_levels = dict(obs.levels)
    rstate.holdout_metrics = obs.holdout
    rstate.live_metrics = dict(obs.live_metrics or {})
    rstate.last_training_at = _last_training_at(obs.state)
    if plan.retraining is not None and any(t.kind == "new_rows" for t in plan.retraining.triggers):
        _count_new_rows(plan, base, wd, rstate, obs)
    reasons = due_triggers(plan, rstate, obs.now)
    in_cooldown = (
        rstate.last_retrain_at is not None
        and plan.retraining is not None
        and obs.now - rstate.last_retrain_at < plan.retraining.cooldown_seconds
    )
    obs.reasons = reasons or ([] if in_cooldown else obs.retrain_requests)
    if obs.reasons and opts.act:
        rstate.last_retrain_at = obs.now
        rstate.save(path)  # before training: a crash must not retrain in a loop
        obs.retrained = retrain(
            plan, base, obs.reasons, time_scale=opts.time_scale, console=opts.console
        )
        if obs.retrained.get("status") == "applied":
            try:
                rstate.data_watermark = data_watermark(plan, base)
                rstate.new_rows = 0
            except (TargetError, KeyError, ValueError):
                pass
    rstate.save(path)
