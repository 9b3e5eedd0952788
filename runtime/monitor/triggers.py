"""Retraining triggers: which of the Plan's triggers are due now, honouring the cooldown."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from specml.compiler.ir import Plan, Trigger
from specml.runtime.files import write_atomic
from specml.runtime.monitor.alerts import metric_drop


@dataclass
class RetrainState:
    """What trigger decisions depend on; saved next to the alert log between monitor runs."""

    last_training_at: float | None = None  # unix seconds the last training started
    data_watermark: float | None = None  # newest event time (unix s) in the last training's data
    last_retrain_at: float | None = None  # last automatic retrain started (for the cooldown)
    alert_levels: dict[str, str] = field(default_factory=dict)  # alert id -> ok/warn/critical
    holdout_metrics: dict[str, float] = field(default_factory=dict)  # at training time
    live_metrics: dict[str, float] = field(default_factory=dict)  # on delayed labels
    new_rows: int | None = None  # rows newer than data_watermark (see count_new_rows)

    def save(self, path: str | Path) -> None:
        """Write as JSON (temp file + rename, so a crash never leaves half a file)."""
        write_atomic(path, json.dumps(asdict(self), sort_keys=True, indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> RetrainState:
        """Read a saved state; a missing file is a fresh state."""
        path = Path(path)
        return cls(**json.loads(path.read_text())) if path.exists() else cls()


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _schedule_due(trigger: Trigger, state: RetrainState, now: float) -> str | None:
    """Due when a cron fire time passed since the last training (or retrain, if later)."""
    from croniter import croniter

    since = max(t for t in (state.last_training_at, state.last_retrain_at, 0.0) if t is not None)
    if since <= 0:
        return None  # never trained: the first training is not a schedule's business
    fire = croniter(trigger.cron, datetime.fromtimestamp(since, tz=UTC)).get_next(float)
    return f"schedule '{trigger.cron}' fired at {_iso(fire)}" if fire <= now else None


def _reason(trigger: Trigger, state: RetrainState, now: float) -> str | None:
    if trigger.kind == "schedule":
        return _schedule_due(trigger, state, now)
    if trigger.kind == "alert":
        level = state.alert_levels.get(trigger.alert_id or "", "ok")
        return f"alert '{trigger.alert_id}' is critical" if level == "critical" else None
    if trigger.kind == "new_rows":
        if (
            state.new_rows is not None
            and trigger.new_rows is not None
            and state.new_rows >= trigger.new_rows
        ):
            return (
                f"{state.new_rows} new rows since the last training (trigger at {trigger.new_rows})"
            )
        return None
    metric = trigger.metric or ""
    drop = metric_drop(metric, state.holdout_metrics.get(metric), state.live_metrics.get(metric))
    if drop is not None and trigger.by is not None and drop >= trigger.by:
        return f"{metric} dropped by {drop:.4g} (trigger at {trigger.by:g})"
    return None


def due_triggers(plan: Plan, state: RetrainState, now: float) -> list[str]:
    """Reasons to retrain now, one per due trigger; empty inside the cooldown or with none due."""
    if plan.retraining is None:
        return []
    last = state.last_retrain_at
    if last is not None and now - last < plan.retraining.cooldown_seconds:
        return []
    reasons = [_reason(t, state, now) for t in plan.retraining.triggers]
    return [r for r in reasons if r is not None]


def count_new_rows(plan: Plan, base_dir: str | Path, watermark: float | None) -> int:
    """Labelled rows newer than the watermark in the label's source file (all rows if None)."""
    import pandas as pd
    from specml.runtime.steps.common import read_source

    source = next(s for s in plan.features.sources if s.id == plan.features.label.source_id)
    frame = read_source(source, Path(base_dir))
    if watermark is None:
        return int(len(frame))
    ts = pd.to_datetime(frame[source.timestamp_field], utc=True)
    cutoff = pd.Timestamp(watermark, unit="s", tz="UTC")
    return int((ts > cutoff).sum())


def data_watermark(plan: Plan, base_dir: str | Path) -> float:
    """The newest event time (unix seconds) in the label's source: what the training saw."""
    import pandas as pd
    from specml.runtime.steps.common import read_source

    source = next(s for s in plan.features.sources if s.id == plan.features.label.source_id)
    ts = pd.to_datetime(read_source(source, Path(base_dir))[source.timestamp_field], utc=True)
    return float(ts.max().timestamp())


def state_summary(state: RetrainState) -> dict[str, Any]:
    """A JSON-ready view of the state, for `specml monitor`."""
    return asdict(state)
