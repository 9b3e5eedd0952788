"""Champion and challenger in one server: model slots, the traffic split read from the rollout
state file, and fault injection for rollback drills.

- `ModelSlot`: one loaded version in a role (champion | challenger) with its own batching runner
  and Prometheus children (series are labelled by model + version; `specml_model_role` says which
  version holds which role).
- `TrafficControl`: the routing table (champion, challenger, Router), replaced as ONE tuple when the
  rollout state file changes (mtime/size/inode poll), so every request reads one consistent table
  at its start and is answered by exactly one model, whatever switch happens meanwhile. A promoted
  state turns the challenger into the champion; a rolled-back (or missing) state sends everything
  to the champion. A challenger named by the state but not loaded yet is loaded from its folder
  in the background (traffic stays on the champion until it is).
- `FaultInjection`: extra latency and/or failures on the CHALLENGER role only, off by default
  (`--inject-latency-ms`, `--inject-error-rate`, or env SPECML_INJECT_LATENCY_MS /
  SPECML_INJECT_ERROR_RATE), like Istio's fault injection. A challenger failure is recorded as
  the challenger's error and the request is answered by the champion instead: a broken challenger
  costs users latency, never an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from specml.runtime.rollout.router import Router
from specml.runtime.serving.batching import DynamicBatcher, UnbatchedRunner
from specml.runtime.serving.categories import CategoryCount
from specml.runtime.serving.metrics import ServingMetrics
from specml.runtime.serving.model import ServedModel

log = logging.getLogger("specml.serving.rollout")

Role = Literal["champion", "challenger"]
ENDPOINTS = (
    "infer",
    "predict_by_entity",
    "invocations",
    "shadow",
    "metadata",
    "health",
    "metrics",
    "other",
)
ALL_CHAMPION = Router()
RETIRE_GRACE_S = 60.0  # a replaced model is closed on a later switch, once this long has passed


class InjectedFault(RuntimeError):
    """A failure injected on purpose (fault-injection drills)."""


@dataclass(frozen=True)
class FaultInjection:
    """Delay and/or fail the challenger's inference (drills only; zero = off)."""

    latency_ms: float = 0.0
    error_rate: float = 0.0
    seed: int | None = None

    @property
    def active(self) -> bool:
        return self.latency_ms > 0 or self.error_rate > 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> FaultInjection:
        """SPECML_INJECT_LATENCY_MS / SPECML_INJECT_ERROR_RATE / SPECML_INJECT_SEED."""
        env = os.environ if environ is None else environ
        seed = env.get("SPECML_INJECT_SEED")
        return cls(
            float(env.get("SPECML_INJECT_LATENCY_MS", 0) or 0),
            float(env.get("SPECML_INJECT_ERROR_RATE", 0) or 0),
            int(seed) if seed else None,
        )


class ModelSlot:
    """One served version in a role: model, runner, fault injection and metric children."""

    def __init__(
        self,
        model: ServedModel,
        runner: DynamicBatcher | UnbatchedRunner,
        metrics: ServingMetrics,
        role: Role,
        faults: FaultInjection | None = None,
    ) -> None:
        self.model = model
        self.runner = runner
        self.metrics = metrics
        self.role: Role = role
        self.faults = (
            faults if (faults is not None and faults.active and role == "challenger") else None
        )
        self._rng = random.Random(faults.seed if faults else None)
        self.labels = (model.name, model.version)
        self.latency = {e: metrics.request_latency.labels(*self.labels, e) for e in ENDPOINTS}
        self._counted: dict[tuple[str, int], tuple[Any, Any, Any]] = {}
        self._per_feature: dict[tuple[str, str], Any] = {
            (kind, feature): (
                metrics.feature_unknown if kind == "unknown" else metrics.feature_missing
            ).labels(*self.labels, feature)
            for kind, feature in model.categories.series()
        }
        metrics.model_info.labels(model.name, model.version, model.provider).set(1)
        metrics.model_role.labels(model.name, model.version, role).set(1)

    @property
    def version(self) -> str:
        return self.model.version

    async def score(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model on an input dict (after any injected delay or failure)."""
        if self.faults is not None:
            if self.faults.latency_ms > 0:
                await asyncio.sleep(self.faults.latency_ms / 1000.0)
            if self.faults.error_rate > 0 and self._rng.random() < self.faults.error_rate:
                raise InjectedFault(f"injected fault on {self.role} v{self.version}")
        return await self.runner.submit(inputs)

    def count_categories(self, counts: list[CategoryCount]) -> None:
        """Count a request's unknown / missing values per feature on this version's series."""
        # every (kind, feature) the guard can report has its child resolved in __init__
        for c in counts:
            if c.unknown:
                self._per_feature[("unknown", c.feature)].inc(c.unknown)
            if c.missing:
                self._per_feature[("missing", c.feature)].inc(c.missing)

    def count(self, endpoint: str, status: int, seconds: float | None = None) -> None:
        """Count one answered (or failed) request on this version's series."""
        children = self._counted.get((endpoint, status))
        if children is None:  # resolve the label children once per (endpoint, code): hot path
            code, m = str(status), self.metrics
            children = (
                m.requests.labels(*self.labels, endpoint, code),
                m.errors.labels(*self.labels, endpoint, code) if status >= 400 else None,
                self.latency.get(endpoint) or m.request_latency.labels(*self.labels, endpoint),
            )
            self._counted[(endpoint, status)] = children
        requests, errors, latency = children
        requests.inc()
        if errors is not None:
            errors.inc()
        if seconds is not None:
            latency.observe(seconds)

    def forget_series(self) -> None:
        """Drop this version's info and role series (after it stopped serving)."""
        m = self.model
        for gauge, labels in (
            (self.metrics.model_info, (m.name, m.version, m.provider)),
            (self.metrics.model_role, (*self.labels, self.role)),
        ):
            with contextlib.suppress(KeyError):
                gauge.remove(*labels)

    def as_champion(self) -> ModelSlot:
        """The same loaded model, now in the champion role (no fault injection)."""
        self.metrics.model_role.remove(*self.labels, self.role)
        return ModelSlot(self.model, self.runner, self.metrics, "champion")

    def close(self) -> None:
        self.runner.close()


@dataclass(frozen=True)
class RouteTable:
    """What one request sees: both slots and the router, replaced together."""

    champion: ModelSlot
    challenger: ModelSlot | None = None
    router: Router = ALL_CHAMPION
    status: str = "none"

    def pick(self, request_id: str) -> tuple[ModelSlot, ModelSlot | None]:
        """(slot that answers, slot the request is mirrored to or None)."""
        if self.challenger is None:
            return self.champion, None
        route = self.router.route(request_id)
        if route.model == "challenger":
            return self.challenger, None
        return self.champion, (self.challenger if route.mirror else None)

    def by_version(self, version: str) -> ModelSlot | None:
        for slot in (self.champion, self.challenger):
            if slot is not None and slot.version == version:
                return slot
        return None


class TrafficControl:
    """Keeps the route table in step with the rollout state file."""

    def __init__(
        self,
        champion: ModelSlot,
        challenger: ModelSlot | None = None,
        state_path: Path | None = None,
        challenger_dir: Path | None = None,
        load_challenger: Callable[[Path], ModelSlot] | None = None,
        poll_seconds: float = 0.05,
    ) -> None:
        self.table = RouteTable(champion, challenger)
        self.state_path = Path(state_path) if state_path else None
        self.challenger_dir = Path(challenger_dir) if challenger_dir else None
        self._load_challenger = load_challenger
        self.poll_seconds = poll_seconds
        self._stamp: tuple[int, int, int] | None = None
        self._task: asyncio.Task[None] | None = None
        self._retired: list[tuple[float, ModelSlot]] = []  # (when, slot) no route points at
        self.refresh()

    def start(self) -> None:
        """Poll the state file on the running loop (no-op without one)."""
        if self.state_path is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watch())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def close(self) -> None:
        """Stop polling and close every slot's runner."""
        self.stop()
        retired = [slot for _, slot in self._retired]
        seen = {id(s): s for s in (self.table.champion, self.table.challenger, *retired) if s}
        for slot in seen.values():
            slot.close()

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.poll_seconds)
            try:
                state = self._changed_state()
                if state is None:
                    continue
                if self._needs_challenger(state):
                    slot = await loop.run_in_executor(None, self._load, state.challenger_version)
                    if slot is None:
                        self._stamp = None  # try again on the next poll
                        continue
                    self._install_challenger(slot)
                self._apply(state)
            except Exception:  # a bad state file must never stop the server: keep the last table
                log.exception("cannot apply rollout state %s; routing unchanged", self.state_path)

    def refresh(self) -> None:
        """Read the state file now if it changed (synchronous; startup and tests)."""
        try:
            state = self._changed_state()
        except Exception as exc:  # a bad state file must not stop the server from starting
            log.error(
                "cannot read rollout state %s (%s); all traffic to the champion",
                self.state_path,
                exc,
            )
            return
        if state is None:
            return
        if self._needs_challenger(state):
            slot = self._load(state.challenger_version)
            if slot is not None:
                self._install_challenger(slot)
            else:
                self._stamp = None
        self._apply(state)

    def _changed_state(self) -> Any:
        from specml.runtime.rollout.state import load_state

        if self.state_path is None:
            return None
        try:
            st = self.state_path.stat()
        except FileNotFoundError:
            return None
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == self._stamp:
            return None
        self._stamp = stamp
        return load_state(self.state_path)

    def _needs_challenger(self, state: Any) -> bool:
        t = self.table
        if state.done or t.champion.version == state.challenger_version:
            return False
        return t.challenger is None or t.challenger.version != state.challenger_version

    def _load(self, version: str) -> ModelSlot | None:
        if self._load_challenger is None or self.challenger_dir is None:
            return None
        try:
            slot = self._load_challenger(self.challenger_dir)
        except Exception as exc:
            log.warning("cannot load challenger from %s: %s", self.challenger_dir, exc)
            return None
        if slot.version != version:
            log.warning("challenger folder holds v%s, the rollout wants v%s", slot.version, version)
            slot.close()
            return None
        return slot

    def _install_challenger(self, slot: ModelSlot) -> None:
        old = self.table.challenger
        if old is not None:
            self._retire(old)
        self.table = RouteTable(self.table.champion, slot)

    def _retire(self, slot: ModelSlot) -> None:
        """Close a replaced slot later: requests that picked it before the switch still finish."""
        now = time.monotonic()
        keep = []
        for when, old in self._retired:
            if now - when > RETIRE_GRACE_S:
                old.close()
            else:
                keep.append((when, old))
        self._retired = [*keep, (now, slot)]

    def _apply(self, state: Any) -> None:
        t = self.table
        challenger = t.challenger
        if challenger is None or challenger.version != state.challenger_version:
            self.table = RouteTable(t.champion, challenger, ALL_CHAMPION, state.status)
            return
        if state.status == "promoted":
            self._retire(t.champion)
            t.champion.forget_series()
            self.table = RouteTable(challenger.as_champion(), None, ALL_CHAMPION, state.status)
            log.info("v%s promoted: now the champion", challenger.version)
            return
        router = ALL_CHAMPION if state.done else Router.from_state(state)
        self.table = RouteTable(t.champion, challenger, router, state.status)
        if (router, state.status) == (t.router, t.status):
            return  # a tick rewrote the state without changing the split
        log.info(
            "rollout %s: %.4g%% to v%s, shadow %.4g%%",
            state.status,
            router.traffic_percent,
            challenger.version,
            router.shadow_sample_percent,
        )
