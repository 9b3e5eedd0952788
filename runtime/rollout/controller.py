"""The rollout controller: pending -> shadow -> canary(step, traffic %) -> promoted | rolled_back.

Every analysis tick judges the challenger's OWN live figures (latency percentiles and error rate
from its histogram/counter window, and alert levels) against the Plan's rollback conditions:
a breached tick adds to a failure streak and `failure_limit` breaches in a row roll back; a
healthy tick resets the streak and adds the time since the previous tick to the step's hold.
Only analysed time counts toward a hold, so the time a crashed controller was down never does:
after `Controller.resume(state_path)` the same step has the same remaining hold.
`time_scale` shrinks every duration and interval (0.01: a 10-minute shadow lasts 6 s) for demos.
State is saved after every tick and transition through a `StateStore`: a state file written
atomically (local target), or one PATCH of the InferenceService (runtime/rollout/kubernetes.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from specml.compiler.ir import SLO, Plan, Rollout
from specml.runtime.monitor.live import LiveFigures
from specml.runtime.rollout.registry import ModelRegistry
from specml.runtime.rollout.state import RolloutState, load_state, save_state

Action = Literal["start", "hold", "advance", "promote", "rollback", "no_data", "done"]
SLO_FIGURES = ("p50_latency_ms", "p95_latency_ms", "p99_latency_ms", "error_rate")


class Clock(Protocol):
    """Where the controller gets time from (a real clock, or a manual one in tests)."""

    def now(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """Wall-clock time."""

    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(max(seconds, 0.0))


@dataclass
class ManualClock:
    """A clock that only moves when told to (tests, simulations)."""

    t: float = 0.0

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += max(seconds, 0.0)


class StateStore(Protocol):
    """Where a rollout's state lives; `save` applies the traffic split with the state, at once."""

    def save(self, state: RolloutState) -> None: ...


@dataclass(frozen=True)
class FileStore:
    """The local target's store: one JSON file, replaced atomically (the server polls it)."""

    path: Path

    def save(self, state: RolloutState) -> None:
        """Write the state file."""
        save_state(state, self.path)

    def load(self) -> RolloutState:
        """Read the state file."""
        return load_state(self.path)


def _store(target: str | Path | StateStore) -> StateStore:
    return FileStore(Path(target)) if isinstance(target, str | Path) else target


@dataclass(frozen=True)
class Decision:
    """What one tick decided and why."""

    action: Action
    status: str
    step_index: int
    traffic_percent: float
    breaches: tuple[str, ...] = ()
    consecutive_failures: int = 0
    remaining_hold_seconds: float = 0.0


def slo_breaches(figures: LiveFigures, slo: SLO, rollout: Rollout) -> list[str]:
    """Every rollback condition the figures meet: SLO figures over target, critical alerts."""
    found: list[str] = []
    for condition in rollout.rollback_when:
        if condition.kind == "slo_breach":
            for name in SLO_FIGURES:
                target, value = getattr(slo, name), figures.get(name)
                if target is not None and value is not None and value > target:
                    found.append(f"slo {name} {value:.4g} > {target:g}")
        elif figures.alert_levels.get(condition.alert_id or "") == "critical":
            found.append(f"alert {condition.alert_id} critical")
    return found


@dataclass
class Controller:
    """Drives one rollout; construct with `start` or `resume`."""

    state: RolloutState
    store: StateStore
    registry: ModelRegistry | None = None
    clock: Clock = field(default_factory=SystemClock)
    min_requests: int = (
        1  # a tick with less challenger traffic is "no data": it neither holds nor fails
    )

    @classmethod
    def start(
        cls,
        plan: Plan,
        state_path: str | Path | StateStore,
        challenger_version: str,
        champion_version: str | None = None,
        registry: ModelRegistry | None = None,
        clock: Clock | None = None,
        time_scale: float = 1.0,
        min_requests: int = 1,
    ) -> Controller:
        """A new rollout of `challenger_version`, pending, persisted at `state_path` (or a store)."""
        if plan.rollout is None:
            from specml.compiler.errors import Diagnostic, TargetError

            raise TargetError(
                [
                    Diagnostic(
                        "the spec has no rollout section",
                        path=("rollout",),
                        hint="add rollout.steps",
                        stage="target",
                        code="no_rollout",
                    )
                ]
            )
        clock = clock or SystemClock()
        state = RolloutState(
            model=plan.registry.name,
            challenger_version=str(challenger_version),
            champion_version=None if champion_version is None else str(champion_version),
            rollout=plan.rollout.model_dump(mode="json"),
            slo=plan.endpoint.slo.model_dump(mode="json"),
            time_scale=time_scale,
            started_at=clock.now(),
        )
        ctl = cls(state, _store(state_path), registry, clock, min_requests)
        ctl._record("created", None, "pending")
        return ctl

    @classmethod
    def resume(
        cls,
        state_path: str | Path,
        registry: ModelRegistry | None = None,
        clock: Clock | None = None,
        min_requests: int = 1,
    ) -> Controller:
        """Continue a rollout from its state file, at the same step with the same remaining hold."""
        return cls.resume_state(
            load_state(state_path), FileStore(Path(state_path)), registry, clock, min_requests
        )

    @classmethod
    def resume_state(
        cls,
        state: RolloutState,
        store: StateStore,
        registry: ModelRegistry | None = None,
        clock: Clock | None = None,
        min_requests: int = 1,
    ) -> Controller:
        """Continue a rollout from a state read back from its store (same step, same hold left)."""
        state.last_tick_at = None  # the time we were down was not analysed: it is not hold time
        return cls(state, store, registry, clock or SystemClock(), min_requests)

    @property
    def state_path(self) -> Path | None:
        """The state file, for the local target's store (None for other stores)."""
        return self.store.path if isinstance(self.store, FileStore) else None

    @property
    def rollout(self) -> Rollout:
        return Rollout.model_validate(self.state.rollout)

    @property
    def slo(self) -> SLO:
        return SLO.model_validate(self.state.slo)

    @property
    def interval_seconds(self) -> float:
        """Scaled time between analysis ticks."""
        return self.rollout.analysis_interval_seconds * self.state.time_scale

    def hold_seconds(self, index: int | None = None) -> float:
        """Scaled hold of a step (the current one by default)."""
        i = self.state.step_index if index is None else index
        return self.rollout.steps[i].duration_seconds * self.state.time_scale if i >= 0 else 0.0

    def remaining_hold(self) -> float:
        """Scaled healthy time still needed before the current step may advance."""
        return (
            max(self.hold_seconds() - self.state.held_seconds, 0.0)
            if self.state.step_index >= 0
            else 0.0
        )

    def begin(self) -> Decision:
        """pending -> the first step."""
        if self.state.status != "pending":
            return self._decision("done" if self.state.done else "hold")
        self._enter_step(0, "rollout started")
        return self._decision("start")

    def tick(self, figures: LiveFigures) -> Decision:
        """One analysis: judge the challenger's figures, then hold, advance, promote or roll back."""
        now = self.clock.now()
        s = self.state
        if s.status == "pending":
            return self.begin()
        if s.done:
            return self._decision("done")
        elapsed = 0.0 if s.last_tick_at is None else max(now - s.last_tick_at, 0.0)
        s.last_tick_at = now
        s.last_figures = figures.to_json()
        s.last_breaches = slo_breaches(figures, self.slo, self.rollout)
        if s.last_breaches:
            s.consecutive_failures += 1
            if s.consecutive_failures >= self.rollout.failure_limit:
                self.rollback(
                    f"{s.consecutive_failures} failed analyses in a row: "
                    + "; ".join(s.last_breaches)
                )
                return self._decision("rollback")
            self._save(now)
            return self._decision("hold")
        s.consecutive_failures = 0
        if figures.requests < self.min_requests:
            self._save(now)
            return self._decision("no_data")
        s.held_seconds += elapsed
        if s.held_seconds + 1e-9 < self.hold_seconds():
            self._save(now)
            return self._decision("hold")
        if s.step_index + 1 >= len(self.rollout.steps):
            self.promote("every rollout step passed")
            return self._decision("promote")
        self._enter_step(
            s.step_index + 1, f"step {s.step_index} held {s.held_seconds:.4g}s healthy"
        )
        return self._decision("advance")

    def promote(self, reason: str) -> None:
        """Make the challenger the champion (also `specml rollout promote`)."""
        if self.state.done:
            return
        self.state.traffic_percent, self.state.shadow_sample_percent = 100.0, 0.0
        self.state.reason = reason
        if self.registry is not None:
            self.registry.promote(self.state.model, self.state.challenger_version, reason)
        self._transition("promoted", reason)

    def rollback(self, reason: str) -> None:
        """Send all traffic back to the champion and reject the challenger (also `specml rollout rollback`)."""
        if self.state.done:
            return
        self.state.traffic_percent, self.state.shadow_sample_percent = 0.0, 0.0
        self.state.reason = reason
        # persist first: the server polls this file, so users are back on the champion before the
        # (possibly slow) registry call
        self._transition("rolled_back", reason)
        if self.registry is not None:
            self.registry.reject(self.state.model, self.state.challenger_version, reason)

    def run(self, sample: Callable[[], LiveFigures], max_ticks: int | None = None) -> RolloutState:
        """Tick every analysis interval until promoted or rolled back (or max_ticks)."""
        if self.state.status == "pending":
            self.begin()
        ticks = 0
        while not self.state.done and (max_ticks is None or ticks < max_ticks):
            self.clock.sleep(self.interval_seconds)
            self.tick(sample())
            ticks += 1
        return self.state

    def _enter_step(self, index: int, reason: str) -> None:
        step = self.rollout.steps[index]
        s = self.state
        s.step_index, s.held_seconds, s.consecutive_failures = index, 0.0, 0
        s.last_tick_at = self.clock.now()  # the first tick's window starts at step entry
        s.traffic_percent = step.traffic_percent
        s.shadow_sample_percent = step.shadow_sample_percent
        self._transition("shadow" if step.kind == "shadow" else "canary", reason)

    def _transition(self, status: str, reason: str) -> None:
        before = self.state.status
        self.state.status = status  # type: ignore[assignment]
        self._record(reason, before, status)

    def _record(self, reason: str, before: str | None, after: str) -> None:
        now = self.clock.now()
        self.state.history.append(
            {
                "at": now,
                "from": before,
                "to": after,
                "step": self.state.step_index,
                "traffic_percent": self.state.traffic_percent,
                "reason": reason,
            }
        )
        self._save(now)

    def _save(self, now: float) -> None:
        self.state.updated_at = now
        self.store.save(self.state)

    def _decision(self, action: Action) -> Decision:
        s = self.state
        return Decision(
            action,
            s.status,
            s.step_index,
            s.traffic_percent,
            tuple(s.last_breaches),
            s.consecutive_failures,
            self.remaining_hold(),
        )
