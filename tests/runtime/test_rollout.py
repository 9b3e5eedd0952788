"""Rollout controller: promotion through every step, rollback timing, crash drill, atomic state."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from specml.compiler.api import plan_file
from specml.compiler.errors import TargetError
from specml.runtime.monitor.live import LiveFigures
from specml.runtime.rollout.controller import Controller, ManualClock
from specml.runtime.rollout.registry import REJECTED_TAG, MemoryRegistry
from specml.runtime.rollout.state import load_state
from specml.runtime.rollout.status import rollout_status

SCALE = 0.01
HEALTHY = LiveFigures(p95_latency_ms=20.0, error_rate=0.0, requests=500)
SLOW = LiveFigures(p95_latency_ms=80.0, error_rate=0.0, requests=500)


@pytest.fixture(scope="module")
def plan():  # type: ignore[no-untyped-def]
    return plan_file("specs/churn.yaml")


def _start(
    plan, tmp_path: Path, clock: ManualClock, registry: MemoryRegistry | None = None
) -> Controller:
    registry = registry or MemoryRegistry({"champion": "1", "challenger": "2"})
    ctl = Controller.start(
        plan, tmp_path / "rollout.json", "2", "1", registry, clock, time_scale=SCALE
    )
    ctl.begin()
    return ctl


def _expected_ticks(plan) -> list[int]:  # type: ignore[no-untyped-def]
    """Healthy ticks each step needs: its hold in whole intervals, at least one."""
    interval = plan.rollout.analysis_interval_seconds
    return [max(math.ceil(s.duration_seconds / interval), 1) for s in plan.rollout.steps]


def test_healthy_challenger_is_promoted_through_every_step(plan, tmp_path: Path) -> None:
    clock = ManualClock(1000.0)
    registry = MemoryRegistry({"champion": "1", "challenger": "2"})
    ctl = _start(plan, tmp_path, clock, registry)
    seen = [(ctl.state.status, ctl.state.traffic_percent, ctl.state.shadow_sample_percent)]
    ticks_per_step: list[int] = []
    ticks = 0
    while not ctl.state.done:
        clock.sleep(ctl.interval_seconds)
        decision = ctl.tick(HEALTHY)
        ticks += 1
        if decision.action in ("advance", "promote"):
            ticks_per_step.append(ticks)
            ticks = 0
            seen.append(
                (ctl.state.status, ctl.state.traffic_percent, ctl.state.shadow_sample_percent)
            )
    steps = plan.rollout.steps
    expected = [
        ("shadow" if s.kind == "shadow" else "canary", s.traffic_percent, s.shadow_sample_percent)
        for s in steps
    ]
    assert seen == [*expected, ("promoted", 100.0, 0.0)]
    assert ticks_per_step == _expected_ticks(plan)
    assert registry.aliases == {"champion": "2"}
    assert [c[0] for c in registry.calls] == ["promote"]
    history = load_state(tmp_path / "rollout.json").history
    assert [h["to"] for h in history] == [
        "pending",
        "shadow",
        "canary",
        "canary",
        "canary",
        "promoted",
    ]
    assert [h["traffic_percent"] for h in history[1:-1]] == [s.traffic_percent for s in steps]


@pytest.mark.parametrize("onset_fraction", [0.0, 0.5, 0.99])
def test_slo_breach_rolls_back_within_limit_ticks(
    plan, tmp_path: Path, onset_fraction: float
) -> None:
    clock = ManualClock(0.0)
    registry = MemoryRegistry({"champion": "1", "challenger": "2"})
    ctl = _start(plan, tmp_path, clock, registry)
    interval, limit = ctl.interval_seconds, plan.rollout.failure_limit
    while ctl.state.traffic_percent != 5.0:  # healthy through shadow into the 5 % step
        clock.sleep(interval)
        ctl.tick(HEALTHY)
    for _ in range(3):
        clock.sleep(interval)
        ctl.tick(HEALTHY)
    onset = clock.now() + onset_fraction * interval
    # A tick's window that only partly covers the breach reads healthy (as a p95 would).
    while not ctl.state.done:
        window_start = clock.now()
        clock.sleep(interval)
        ctl.tick(SLOW if window_start >= onset else HEALTHY)
    assert ctl.state.status == "rolled_back"
    assert clock.now() - onset <= interval * limit + interval + 1e-9
    assert ctl.state.traffic_percent == 0.0
    assert "p95_latency_ms 80 > 50" in ctl.state.reason
    assert registry.tags["2"][REJECTED_TAG] == ctl.state.reason
    assert registry.aliases == {"champion": "1"}


def test_breaches_must_be_consecutive(plan, tmp_path: Path) -> None:
    clock = ManualClock(0.0)
    ctl = _start(plan, tmp_path, clock)
    limit = plan.rollout.failure_limit
    for _ in range(5):  # limit-1 breaches, then a healthy tick resets the streak
        for figures in [SLOW] * (limit - 1) + [HEALTHY]:
            clock.sleep(ctl.interval_seconds)
            ctl.tick(figures)
    assert ctl.state.status != "rolled_back" and ctl.state.consecutive_failures == 0


def test_critical_rollback_alert_rolls_back(plan, tmp_path: Path) -> None:
    clock = ManualClock(0.0)
    ctl = _start(plan, tmp_path, clock)
    drifting = LiveFigures(
        p95_latency_ms=10.0,
        error_rate=0.0,
        requests=100,
        alert_levels={"feature_drift": "critical"},
    )
    warned = LiveFigures(
        p95_latency_ms=10.0, error_rate=0.0, requests=100, alert_levels={"feature_drift": "warn"}
    )
    clock.sleep(ctl.interval_seconds)
    assert ctl.tick(warned).action == "hold"
    decisions = []
    for _ in range(plan.rollout.failure_limit):
        clock.sleep(ctl.interval_seconds)
        decisions.append(ctl.tick(drifting).action)
    assert decisions[-1] == "rollback" and "alert feature_drift critical" in ctl.state.reason


def test_no_traffic_neither_holds_nor_fails(plan, tmp_path: Path) -> None:
    clock = ManualClock(0.0)
    ctl = _start(plan, tmp_path, clock)
    for _ in range(50):
        clock.sleep(ctl.interval_seconds)
        assert ctl.tick(LiveFigures(requests=0)).action == "no_data"
    assert ctl.state.status == "shadow" and ctl.remaining_hold() == ctl.hold_seconds()


def test_crash_drill_resumes_same_step_and_remaining_hold(plan, tmp_path: Path) -> None:
    clock = ManualClock(0.0)
    ctl = _start(plan, tmp_path, clock)
    while ctl.state.traffic_percent != 20.0:
        clock.sleep(ctl.interval_seconds)
        ctl.tick(HEALTHY)
    for figures in (HEALTHY, HEALTHY, HEALTHY, SLOW):  # some hold, and a failure streak of 1
        clock.sleep(ctl.interval_seconds)
        ctl.tick(figures)
    step, remaining, streak = (
        ctl.state.step_index,
        ctl.remaining_hold(),
        ctl.state.consecutive_failures,
    )
    assert 0 < remaining < ctl.hold_seconds() and streak == 1
    del ctl  # the process dies here
    later = ManualClock(clock.now() + 10_000.0)  # long downtime: must not count as hold
    resumed = Controller.resume(tmp_path / "rollout.json", MemoryRegistry({"champion": "1"}), later)
    assert (resumed.state.step_index, resumed.remaining_hold()) == (step, pytest.approx(remaining))
    assert resumed.state.consecutive_failures == streak
    later.sleep(resumed.interval_seconds)
    resumed.tick(HEALTHY)
    assert resumed.remaining_hold() == pytest.approx(
        remaining
    )  # first window after restart: no credit
    while not resumed.state.done:
        later.sleep(resumed.interval_seconds)
        resumed.tick(HEALTHY)
    assert resumed.state.status == "promoted"


def test_state_file_is_never_half_written(plan, tmp_path: Path, monkeypatch) -> None:
    clock = ManualClock(0.0)
    ctl = _start(plan, tmp_path, clock)
    path = tmp_path / "rollout.json"
    before = path.read_text()
    (tmp_path / ".rollout.json.crashed.tmp").write_text('{"status": "promo')  # killed mid-write

    def killed(*args: object) -> None:
        raise KeyboardInterrupt  # the process is killed between the temp write and the rename

    monkeypatch.setattr("os.replace", killed)
    clock.sleep(ctl.interval_seconds)
    with pytest.raises(KeyboardInterrupt):
        ctl.tick(HEALTHY)
    monkeypatch.undo()
    assert path.read_text() == before
    assert Controller.resume(path).state.status == "shadow"
    leftovers = sorted(p.name for p in tmp_path.iterdir())
    assert leftovers == [".rollout.json.crashed.tmp", "rollout.json"]  # our own temp was removed


def test_missing_or_corrupt_state_is_a_target_error(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match="no rollout state"):
        load_state(tmp_path / "absent.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(TargetError, match="not valid JSON"):
        load_state(tmp_path / "bad.json")


def test_rollout_status_reports_step_split_slo_and_history(plan, tmp_path: Path) -> None:
    clock = ManualClock(0.0)
    ctl = _start(plan, tmp_path, clock)
    while ctl.state.traffic_percent != 5.0:
        clock.sleep(ctl.interval_seconds)
        ctl.tick(HEALTHY)
    clock.sleep(ctl.interval_seconds)
    ctl.tick(SLOW)
    status = rollout_status(tmp_path / "rollout.json")
    json.dumps(status)  # JSON-ready for `--format json`
    assert status["status"] == "canary" and status["step"]["index"] == 1
    assert status["traffic"] == {
        "challenger_percent": 5.0,
        "champion_percent": 95.0,
        "shadow_sample_percent": 0.0,
    }
    assert status["slo"]["p95_latency_ms"] == {"target": 50.0, "live": 80.0, "ok": False}
    assert status["slo"]["error_rate"]["ok"] is True
    assert (
        status["consecutive_failures"] == 1
        and status["failure_limit"] == plan.rollout.failure_limit
    )
    assert status["step"]["remaining_hold_seconds"] == pytest.approx(
        plan.rollout.steps[1].duration_seconds * SCALE
    )
    assert [h["to"] for h in status["history"]] == ["pending", "shadow", "canary"]
