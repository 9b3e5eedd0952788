"""Retraining triggers with explicit `now` values: schedule, alert, new rows, metric drop, cooldown."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from specml.compiler.api import plan_file
from specml.runtime.monitor.triggers import (
    RetrainState,
    count_new_rows,
    data_watermark,
    due_triggers,
)


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.fixture(scope="module")
def churn():  # type: ignore[no-untyped-def]
    plan = plan_file("specs/churn.yaml")
    assert plan.retraining is not None and plan.retraining.cooldown_seconds == 6 * 3600
    return plan


def test_weekly_schedule_fires_after_monday_3am(churn) -> None:
    # churn: "0 3 * * 1" (Mondays 03:00 UTC); 2026-11-23 is a Monday.
    state = RetrainState(last_training_at=ts("2026-11-18T12:00:00"))
    assert due_triggers(churn, state, ts("2026-11-23T02:59:59")) == []
    (reason,) = due_triggers(churn, state, ts("2026-11-23T03:00:00"))
    assert "0 3 * * 1" in reason and "2026-11-23T03:00:00Z" in reason
    trained_after = RetrainState(last_training_at=ts("2026-11-23T03:30:00"))
    assert due_triggers(churn, trained_after, ts("2026-11-24T00:00:00")) == []


def test_alert_trigger_needs_critical(churn) -> None:
    now = ts("2026-11-20T10:00:00")
    base = dict(last_training_at=ts("2026-11-19T10:00:00"))
    assert (
        due_triggers(churn, RetrainState(**base, alert_levels={"feature_drift": "warn"}), now) == []
    )
    reasons = due_triggers(
        churn, RetrainState(**base, alert_levels={"feature_drift": "critical"}), now
    )
    assert reasons == ["alert 'feature_drift' is critical"]


def test_new_rows_threshold(churn) -> None:
    now = ts("2026-11-20T10:00:00")
    base = dict(last_training_at=ts("2026-11-19T10:00:00"))
    assert due_triggers(churn, RetrainState(**base, new_rows=99_999), now) == []
    (reason,) = due_triggers(churn, RetrainState(**base, new_rows=100_000), now)
    assert reason.startswith("100000 new rows")


def test_cooldown_suppresses_everything(churn) -> None:
    critical = {"feature_drift": "critical"}
    last = ts("2026-11-20T00:00:00")
    state = RetrainState(last_training_at=last, last_retrain_at=last, alert_levels=critical)
    assert due_triggers(churn, state, last + churn.retraining.cooldown_seconds - 1) == []
    assert len(due_triggers(churn, state, last + churn.retraining.cooldown_seconds)) == 1


def test_metric_drop_trigger_on_fraud() -> None:
    plan = plan_file("specs/fraud.yaml")  # {metric_drop: {metric: pr_auc, by: 0.05}}
    now = ts("2026-11-20T10:00:00")
    base = dict(last_training_at=ts("2026-11-20T09:00:00"), holdout_metrics={"pr_auc": 0.60})
    assert due_triggers(plan, RetrainState(**base, live_metrics={"pr_auc": 0.56}), now) == []
    (reason,) = due_triggers(plan, RetrainState(**base, live_metrics={"pr_auc": 0.54}), now)
    assert reason.startswith("pr_auc dropped by 0.06")


def test_new_rows_counted_past_the_watermark(tmp_path: Path, churn) -> None:
    path = tmp_path / "data/churn/customers.parquet"
    path.parent.mkdir(parents=True)
    times = pd.date_range("2026-01-01", periods=10, freq="D", tz="UTC")
    pd.DataFrame({"customer_id": range(10), "event_ts": times, "churned": 0}).to_parquet(path)
    watermark = data_watermark(churn, tmp_path)
    assert watermark == times[-1].timestamp()
    assert count_new_rows(churn, tmp_path, times[6].timestamp()) == 3
    assert count_new_rows(churn, tmp_path, watermark) == 0
    assert count_new_rows(churn, tmp_path, None) == 10


def test_state_round_trips(tmp_path: Path) -> None:
    state = RetrainState(last_training_at=1.0, alert_levels={"a": "warn"}, new_rows=5)
    state.save(tmp_path / "retrain.json")
    assert RetrainState.load(tmp_path / "retrain.json") == state
    assert RetrainState.load(tmp_path / "absent.json") == RetrainState()
