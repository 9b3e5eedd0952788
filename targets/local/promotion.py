"""Crash-safe promotion and rollback on the local target: an intent journal and idempotent steps.

A promotion lands in three places: the registry (champion alias -> X, challenger alias off X), the
published folder `serving/current` (what a restarted server loads) and the rollout state (what a
running server routes by). A kill -9 can fall between any two, so every terminal decision is
recorded first in `rollout/promotion.json` (written atomically), then carried out step by step:

  promote X:   intent -> registry alias -> serving/current := X -> state `promoted` -> clear intent
  rollback X:  intent -> state `rolled_back` (users back on the champion first) -> registry
               reject -> clear intent

Every step is idempotent (an alias already on X is left alone, a folder already holding X is not
republished, a terminal state is not rewritten), so `finish_pending`, which every local entry point
calls first (apply, serve, rollout run/promote/rollback/status, the monitor's actions), redoes the
journal's steps and converges to ONE champion across registry, state and served folder. A
promotion is only ever rolled forward. The folder is copied complete beside `serving/current`,
then swapped in at once (publish.py): it holds the old version or the whole new one.

One process at a time decides and carries out a promotion or rollback (an flock on
rollout/promotion.lock, released by a kill): the first decision stands, a later one on the same
rollout (say `rollout promote` racing a tick that rolls back) changes nothing.

Test-only fault injection: env SPECML_TEST_CRASH_AT=<one of CRASH_POINTS> SIGKILLs the process at
that point (unset in normal use), so tests can prove every kill point converges.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from specml.compiler.ir import Plan
from specml.runtime.layout import Workdir
from specml.runtime.rollout.controller import Clock, Controller, FileStore
from specml.runtime.rollout.state import (
    PromotionIntent,
    RolloutState,
    clear_intent,
    load_intent,
    load_state,
    save_intent,
)
from specml.targets.local.publish import copy_in, folder_version, remove_stale_staging
from specml.targets.local.state import workdir

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; the journal alone still converges
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("specml.rollout")

CRASH_ENV = "SPECML_TEST_CRASH_AT"
CRASH_POINTS = (
    "promote:intent",  # journal written, nothing else done
    "promote:alias",  # registry champion moved
    "promote:staged",  # the new folder copied beside serving/current, not swapped in yet
    "promote:publish",  # serving/current holds the new version
    "promote:state_before",  # just before the state file says `promoted`
    "promote:state",  # the state says `promoted`, the journal is not cleared yet
    "rollback:intent",
    "rollback:state",  # users back on the champion, the registry not told yet
    "rollback:reject",  # the registry rejected the version, the journal is not cleared yet
)
_LOCK_WAIT_S = 30.0  # a live process carrying out a promotion takes well under a second
_held: dict[Path, int] = {}  # journal -> the lock file descriptor this process holds


def crash_point(name: str) -> None:
    """SIGKILL this process here when SPECML_TEST_CRASH_AT names `name` (tests only)."""
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def journal_path(plan: Plan, base_dir: Path) -> Path:
    """<workdir>/rollout/promotion.json: the promotion or rollback being carried out."""
    return Workdir(workdir(plan, base_dir)).rollout_state.with_name("promotion.json")


def publish_champion(plan: Plan, base_dir: Path, version: str) -> Path:
    """Make serving/current hold `version` (copied from serving/challenger, else downloaded from the
    registry): a complete copy beside it, then one atomic swap. A no-op when it already holds it."""
    wd = Workdir(workdir(plan, base_dir))
    source, target, version = wd.challenger, wd.current, str(version)
    if folder_version(target) == version:
        return target
    if folder_version(source) != version:
        from specml.runtime.contract import StepContext
        from specml.runtime.steps.register import publish

        return publish(plan, StepContext(workdir=wd.root, data_dir=Path(base_dir)), version)
    return copy_in(source, target, version, lambda: crash_point("promote:staged"))


@dataclass
class JournaledRegistry:
    """The rollout's ModelRegistry on the local target: `promote` records the intent, moves the
    registry's alias (when there is a registry) and publishes serving/current; the controller then
    saves the `promoted` state. A rollback's intent is recorded by `JournaledStore`."""

    plan: Plan
    base_dir: Path
    inner: Any = None  # MlflowRegistry, MemoryRegistry or None (no registry yet)

    def version_for(self, model: str, alias: str) -> str | None:
        """The version an alias points at (None without a registry)."""
        return None if self.inner is None else self.inner.version_for(model, alias)

    def promote(self, model: str, version: str, reason: str) -> None:
        """Journal, then registry alias, then serving/current (each step safe to redo); nothing
        when another process has decided this rollout meanwhile (the first decision stands)."""
        wd = Workdir(workdir(self.plan, self.base_dir))
        journal = journal_path(self.plan, self.base_dir)
        _lock(journal)
        if _decided(wd.rollout_state):
            return
        previous = folder_version(wd.current)
        intent = PromotionIntent("promote", model, str(version), reason, previous, time.time())
        save_intent(intent, journal)
        crash_point("promote:intent")
        if self.inner is not None:
            self.inner.promote(model, str(version), reason)
        crash_point("promote:alias")
        publish_champion(self.plan, self.base_dir, str(version))
        crash_point("promote:publish")

    def reject(self, model: str, version: str, reason: str) -> None:
        """Tag the version rejected in the registry (after the state sent users to the champion);
        nothing unless this rollback was journaled (another process may have decided first)."""
        intent = load_intent(journal_path(self.plan, self.base_dir))
        if intent is None or (intent.action, intent.version) != ("rollback", str(version)):
            return
        if self.inner is not None:
            self.inner.reject(model, str(version), reason)
        crash_point("rollback:reject")


@dataclass(frozen=True)
class JournaledStore(FileStore):
    """The rollout state file; before a `rolled_back` state is written, the rollback's intent is."""

    journal: Path | None = None

    def save(self, state: RolloutState) -> None:
        """Write the state (the journal first for a rollback); a state already decided on disk
        (promoted or rolled back by another process) is not overwritten."""
        if state.done and self.journal is not None:
            _lock(self.journal)
            if _decided(self.path):
                return
        if state.status == "rolled_back" and self.journal is not None:
            if load_intent(self.journal) is None:
                intent = PromotionIntent(
                    "rollback",
                    state.model,
                    state.challenger_version,
                    state.reason or "rolled back",
                    state.champion_version,
                    time.time(),
                )
                save_intent(intent, self.journal)
            crash_point("rollback:intent")
        if state.status == "promoted":
            crash_point("promote:state_before")
        super().save(state)
        if state.done:
            crash_point("promote:state" if state.status == "promoted" else "rollback:state")


def store_for(plan: Plan, base_dir: Path) -> JournaledStore:
    """The journaled state store of the Plan's workdir."""
    wd = Workdir(workdir(plan, base_dir))
    return JournaledStore(wd.rollout_state, journal_path(plan, base_dir))


def resume(
    plan: Plan,
    base_dir: Path,
    registry: Any = None,
    clock: Clock | None = None,
    min_requests: int = 1,
) -> Controller:
    """The rollout in progress, its promotion or rollback carried out through the journal."""
    store = store_for(plan, base_dir)
    inner = JournaledRegistry(plan, Path(base_dir), registry)
    return Controller.resume_state(store.load(), store, inner, clock, min_requests)


def start(
    plan: Plan,
    base_dir: Path,
    challenger: str,
    champion: str | None,
    registry: Any = None,
    clock: Clock | None = None,
    time_scale: float = 1.0,
    min_requests: int = 1,
) -> Controller:
    """A new rollout (pending, persisted), its promotion or rollback carried out through the journal."""
    inner = JournaledRegistry(plan, Path(base_dir), registry)
    store = store_for(plan, base_dir)
    return Controller.start(
        plan, store, challenger, champion, inner, clock, time_scale, min_requests
    )


def finish_pending(plan: Plan, base_dir: Path, registry: Any = "mlflow") -> PromotionIntent | None:
    """Complete the promotion or rollback a crash left half done (registry alias, serving/current,
    rollout state), then clear the journal; returns what it completed, or None (nothing pending).
    `registry`: "mlflow" (the workdir's registry), a registry object, or None."""
    base_dir = Path(base_dir)
    path = journal_path(plan, base_dir)
    if load_intent(path) is None and _unjournaled_promotion(plan, base_dir, registry) is None:
        _unlock(path)  # held only when this process's decision was pre-empted by another's
        return None  # the common case: nothing pending
    _lock(path)  # a live process carrying it out finishes first; then there is nothing left
    try:
        intent = load_intent(path) or _unjournaled_promotion(plan, base_dir, registry)
        if intent is not None:
            _carry_out(plan, base_dir, registry, intent)
            clear_intent(path)
            remove_stale_staging(Workdir(workdir(plan, base_dir)).serving)
        return intent
    finally:
        _unlock(path)


def _carry_out(plan: Plan, base_dir: Path, registry: Any, intent: PromotionIntent) -> None:
    """Every step of the intent again, in order (each a no-op when already done)."""
    inner = _resolve(plan, base_dir, registry)
    log.info("carrying out the %s of v%s from the journal", intent.action, intent.version)
    if intent.action == "promote":
        if inner is not None:
            inner.promote(intent.model, intent.version, intent.reason)
        publish_champion(plan, base_dir, intent.version)
        _settle_state(plan, base_dir, intent)
    else:
        _settle_state(plan, base_dir, intent)
        if inner is not None:
            inner.reject(intent.model, intent.version, intent.reason)


def _lock(journal: Path) -> None:
    """Hold rollout/promotion.lock until `_unlock` (re-entrant in this process): one process at a
    time decides and carries out a promotion or rollback. A killed holder's lock dies with it;
    one that is stuck is waited for `_LOCK_WAIT_S`, then ignored (every step is idempotent)."""
    key = journal.resolve()
    if fcntl is None or key in _held:
        return
    journal.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(journal.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + _LOCK_WAIT_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() < deadline:
                time.sleep(0.02)
                continue
            log.warning("%s still locked after %gs: going on", journal, _LOCK_WAIT_S)
            os.close(fd)
            return
        _held[key] = fd
        return


def _unlock(journal: Path) -> None:
    fd = _held.pop(journal.resolve(), None)
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)  # closing the descriptor releases the flock


def _decided(state_file: Path, version: str | None = None) -> bool:
    """The rollout state on disk is promoted or rolled back (of `version`, when given)."""
    from specml.compiler.errors import TargetError

    try:
        state = load_state(state_file)
    except (TargetError, TypeError):
        return False
    return state.done and (version is None or state.challenger_version == str(version))


def _resolve(plan: Plan, base_dir: Path, registry: Any) -> Any:
    if isinstance(registry, JournaledRegistry):
        return registry.inner
    if isinstance(registry, str):
        from specml.targets.local.rollout import registry_for

        return registry_for(plan, base_dir)
    return registry


def _unjournaled_promotion(plan: Plan, base_dir: Path, registry: Any) -> PromotionIntent | None:
    """A `promoted` state whose version serving/current does not hold, with no journal (left by a
    specml without one): finish it when the registry's champion is that version too."""
    from specml.compiler.errors import TargetError

    wd = Workdir(workdir(plan, base_dir))
    if not wd.rollout_state.exists():
        return None
    try:
        state = load_state(wd.rollout_state)
    except (TargetError, TypeError):
        return None
    if state.status != "promoted" or folder_version(wd.current) == state.challenger_version:
        return None
    inner = _resolve(plan, base_dir, registry)
    if inner is not None:
        champion = inner.version_for(state.model, plan.registry.champion_alias)
        if champion != state.challenger_version:
            return None  # the champion has moved on since (e.g. an apply without a rollout)
    reason = state.reason or "promoted"
    return PromotionIntent("promote", state.model, state.challenger_version, reason)


def _settle_state(plan: Plan, base_dir: Path, intent: PromotionIntent) -> None:
    """The rollout state records the intent's outcome (no-op when it already does)."""
    path = Workdir(workdir(plan, base_dir)).rollout_state
    if not path.exists():
        return  # a promotion without a rollout
    state = load_state(path)
    if state.done or state.challenger_version != intent.version:
        return
    ctl = Controller.resume_state(state, FileStore(path))
    if intent.action == "promote":
        ctl.promote(intent.reason)
    else:
        ctl.rollback(intent.reason)
