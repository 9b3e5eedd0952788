"""The local target's rollout: drive a challenger through the spec's steps against the live server.

Files under the workdir: `rollout/state.json` (the controller's atomic state; the server polls it
to set its traffic split), `serving/current` (champion) and `serving/challenger` (challenger).
`run_rollout` samples the server's /metrics every analysis interval, turns the challenger's own
series (its version's latency histogram and request/error counters) into LiveFigures and ticks
the Controller. Promotion moves the MLflow `champion` alias and publishes the challenger to
serving/current; rollback sends 100 % to the champion and tags the version rejected. Both go
through the promotion journal (promotion.py): every entry point here first completes one a crash
left half done. A killed `run` resumes from the state file at the same step with the same
remaining hold.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from specml.compiler.errors import Diagnostic, TargetError
from specml.compiler.ir import Plan
from specml.runtime.layout import Workdir
from specml.targets.base import RolloutOptions, RolloutReport
from specml.targets.local import promotion
from specml.targets.local.publish import folder_version
from specml.targets.local.state import workdir

log = logging.getLogger("specml.rollout")
# the series the controller judges (only the challenger's lines are parsed: scrapes stay cheap)
_FAMILIES = (
    "specml_request_latency_seconds_",
    "specml_requests_total",
    "specml_request_errors_total",
)


def state_path(plan: Plan, base_dir: Path) -> Path:
    """<workdir>/rollout/state.json."""
    return Workdir(workdir(plan, base_dir)).rollout_state


def serving_dir(plan: Plan, base_dir: Path, slot: str) -> Path:
    """<workdir>/serving/<slot> (current | challenger)."""
    return Workdir(workdir(plan, base_dir)).slot(slot)


def server_url(plan: Plan, url: str | None = None) -> str:
    """The local server's base URL (the spec's host and port unless given)."""
    return url or f"http://{plan.targets.local.host}:{plan.targets.local.port}"


def _error(message: str, code: str, hint: str) -> TargetError:
    return TargetError([Diagnostic(message, hint=hint, stage="target", code=code)])


def registry_for(plan: Plan, base_dir: Path) -> Any:
    """The MLflow registry under the workdir (None when nothing was ever registered)."""
    from specml.runtime.contract import StepContext
    from specml.runtime.rollout.registry import MlflowRegistry

    wd = workdir(plan, base_dir)
    if not Workdir(wd).mlflow_db.exists():
        return None
    return MlflowRegistry(
        StepContext(workdir=wd, data_dir=Path(base_dir)).mlflow_uri,
        plan.registry.champion_alias,
        plan.registry.challenger_alias,
    )


class MetricsSampler:
    """Scrapes /metrics; each call gives the challenger's figures since the previous call."""

    def __init__(self, url: str, model: str, version: str, timeout_s: float = 2.0) -> None:
        self.url = url.rstrip("/") + "/metrics"
        self.labels = {"model": model, "version": str(version)}
        self.timeout = timeout_s
        self._previous: Any = None
        self.failures = 0

    def _scrape(self) -> Any:
        from specml.runtime.monitor.live import parse_exposition

        try:
            with urllib.request.urlopen(self.url, timeout=self.timeout) as response:
                text = response.read().decode()
        except OSError as exc:
            self.failures += 1
            log.warning("cannot scrape %s: %s (no data this interval)", self.url, exc)
            return None
        needle = f'version="{self.labels["version"]}"'
        wanted = [
            line for line in text.splitlines() if line.startswith(_FAMILIES) and needle in line
        ]
        return parse_exposition("\n".join(wanted) + "\n", self.labels, at=time.time())

    def reset(self) -> None:
        """Start the next window now."""
        snapshot = self._scrape()
        if snapshot is not None:
            self._previous = snapshot

    def __call__(self) -> Any:
        from specml.runtime.monitor.live import LiveFigures, figures

        snapshot = self._scrape()
        if snapshot is None:
            return LiveFigures()
        window = snapshot if self._previous is None else snapshot.minus(self._previous)
        self._previous = snapshot
        return figures(window)


def _controller(
    plan: Plan,
    base_dir: Path,
    time_scale: float,
    registry: Any,
    clock: Any = None,
    min_requests: int = 1,
) -> Any:
    """Resume the rollout in progress, or start one for the published challenger."""
    from specml.runtime.rollout.state import load_state

    path = state_path(plan, base_dir)
    champion = folder_version(serving_dir(plan, base_dir, "current"))
    challenger = folder_version(serving_dir(plan, base_dir, "challenger"))
    if path.exists():
        state = load_state(path)
        if not state.done:
            return promotion.resume(plan, base_dir, registry, clock, min_requests)
        if state.challenger_version == challenger:
            challenger = None  # that one was already rolled out
    if challenger is None or challenger == champion:
        raise _error(
            "no challenger to roll out",
            "no_challenger",
            "run `specml apply SPEC --target local` to train and publish a challenger",
        )
    if plan.rollout is None:
        raise _error(
            "the spec has no rollout section", "no_rollout", "add rollout.steps to the spec"
        )
    return promotion.start(
        plan, base_dir, challenger, champion, registry, clock, time_scale, min_requests
    )


def start_rollout(
    plan: Plan,
    base_dir: Path,
    challenger_version: str,
    champion_version: str | None = None,
    time_scale: float = 1.0,
    registry: Any = "mlflow",
) -> Any:
    """Start (pending -> first step, persisted) the rollout of a published challenger; `rollout run`
    (or the retraining loop) then drives it. Idempotent for the challenger already in progress."""
    from specml.runtime.rollout.state import load_state

    registry = registry_for(plan, base_dir) if registry == "mlflow" else registry
    promotion.finish_pending(plan, base_dir, registry)
    path = state_path(plan, base_dir)
    if path.exists():
        state = load_state(path)
        if not state.done and state.challenger_version == str(challenger_version):
            return promotion.resume(plan, base_dir, registry)
    if plan.rollout is None:
        raise _error(
            "the spec has no rollout section", "no_rollout", "add rollout.steps to the spec"
        )
    champion = champion_version or folder_version(serving_dir(plan, base_dir, "current"))
    ctl = promotion.start(
        plan, base_dir, str(challenger_version), champion, registry, time_scale=time_scale
    )
    ctl.begin()
    return ctl


def alert_levels(plan: Plan, base_dir: Path, since: float | None) -> dict[str, str]:
    """The latest level of each alert logged by `specml monitor` since the rollout started."""
    from specml.runtime.monitor.alerts import read_alert_log

    levels: dict[str, str] = {}
    for event in read_alert_log(workdir(plan, base_dir)):
        if since is None or float(event.get("at", 0.0)) >= since:
            levels[str(event["alert_id"])] = str(event["level"])
    return levels


def _finished(plan: Plan, base_dir: Path, registry: Any, action: str | None = None) -> Any:
    """The rollout state when a promotion or rollback a crash left half done was just completed
    (`action`: only that kind), else None."""
    from specml.runtime.rollout.state import load_state

    done = promotion.finish_pending(plan, base_dir, registry)
    if done is None or (action is not None and done.action != action):
        return None
    path = state_path(plan, base_dir)
    return load_state(path) if path.exists() else None


def run_rollout(
    plan: Plan,
    base_dir: Path,
    time_scale: float = 1.0,
    url: str | None = None,
    max_seconds: float | None = None,
    on_decision: Callable[[Any], None] | None = None,
    registry: Any = "mlflow",
    min_requests: int = 1,
) -> Any:
    """Run the controller until promoted or rolled back (or max_seconds); returns the state."""
    from specml.runtime.rollout.state import load_state

    registry = registry_for(plan, base_dir) if registry == "mlflow" else registry
    finished = _finished(plan, base_dir, registry)  # a crash left one half done: that was this run
    if finished is not None:
        return finished
    ctl = _controller(plan, base_dir, time_scale, registry, min_requests=min_requests)
    if registry is not None and hasattr(registry, "client"):  # import MLflow now, not mid-rollback
        threading.Thread(target=lambda: registry.client, daemon=True, name="mlflow-warmup").start()
    sampler = MetricsSampler(server_url(plan, url), ctl.state.model, ctl.state.challenger_version)
    clock = ctl.clock
    sampler.reset()  # baseline (and the parser's imports) before the challenger gets traffic
    if ctl.state.status == "pending":
        ctl.begin()
    started = clock.now()
    # the first window starts at step entry (saving the state's fsyncs may take a while)
    next_at = (ctl.state.last_tick_at or started) + ctl.interval_seconds
    while not ctl.state.done:
        if max_seconds is not None and clock.now() - started >= max_seconds:
            break
        clock.sleep(next_at - clock.now())
        next_at = max(next_at + ctl.interval_seconds, clock.now())  # fixed cadence, no drift
        on_disk = load_state(ctl.state_path)
        if on_disk.updated_at != ctl.state.updated_at:  # `rollout promote|rollback` meanwhile
            ctl.state = on_disk
            ctl.state.last_tick_at = None
            if on_disk.done:
                break
        woke = clock.now()
        figures = sampler()
        if plan.rollback_alert_ids():
            levels = alert_levels(plan, base_dir, ctl.state.started_at)
            figures = dataclasses.replace(figures, alert_levels=levels)
        decision = ctl.tick(figures)
        log.debug(
            "tick %s: scrape %.3fs, tick + save %.3fs",
            decision.action,
            (ctl.state.last_tick_at or woke) - woke,
            clock.now() - woke,
        )
        if on_decision is not None:
            on_decision(decision)
    promotion.finish_pending(plan, base_dir, registry)  # carry out the journaled decision
    return ctl.state


def _in_progress(plan: Plan, base_dir: Path, registry: Any) -> Any:
    from specml.runtime.rollout.state import load_state

    path = state_path(plan, base_dir)
    if not path.exists() or load_state(path).done:
        raise _error(
            "no rollout in progress",
            "no_rollout_in_progress",
            "start one with `specml rollout run SPEC` after an apply published a challenger",
        )
    return promotion.resume(plan, base_dir, registry)


def promote_now(
    plan: Plan, base_dir: Path, reason: str = "promoted by hand", registry: Any = "mlflow"
) -> Any:
    """`specml rollout promote`: make the challenger the champion now, skipping remaining steps."""
    registry = registry_for(plan, base_dir) if registry == "mlflow" else registry
    finished = _finished(plan, base_dir, registry, "promote")  # the crashed `promote`, completed
    if finished is not None:
        return finished
    ctl = _in_progress(plan, base_dir, registry)
    ctl.promote(reason)
    promotion.finish_pending(plan, base_dir, registry)  # carry out the journaled decision
    return ctl.state


def rollback_now(plan: Plan, base_dir: Path, reason: str, registry: Any = "mlflow") -> Any:
    """`specml rollout rollback`: all traffic to the champion, the challenger rejected with `reason`."""
    registry = registry_for(plan, base_dir) if registry == "mlflow" else registry
    finished = _finished(plan, base_dir, registry, "rollback")  # the crashed `rollback`, completed
    if finished is not None:
        return finished
    ctl = _in_progress(plan, base_dir, registry)
    ctl.rollback(reason)
    promotion.finish_pending(plan, base_dir, registry)  # carry out the journaled decision
    return ctl.state


def status(plan: Plan, base_dir: Path) -> dict[str, Any]:
    """`specml rollout status` as a JSON-ready dict (state file path included)."""
    from specml.runtime.rollout.status import rollout_status

    promotion.finish_pending(plan, base_dir)
    path = state_path(plan, base_dir)
    if not path.exists():
        raise _error(
            "no rollout in progress (no rollout state yet)",
            "no_rollout_in_progress",
            "start one with `specml rollout run SPEC` after an apply published a challenger",
        )
    return {"state_file": str(path), **rollout_status(path)}


def _start_published_challenger(plan: Plan, base_dir: Path) -> None:
    """`rollout promote` with no rollout in progress: start one for the published challenger
    (not yet rolled out), so that promoting by hand needs no `rollout run` first."""
    from specml.runtime.rollout.state import load_state

    path = state_path(plan, base_dir)
    state = load_state(path) if path.exists() else None
    if state is not None and not state.done:
        return
    challenger = folder_version(serving_dir(plan, base_dir, "challenger"))
    champion = folder_version(serving_dir(plan, base_dir, "current"))
    if challenger is None or challenger == champion:
        return  # promote_now says there is nothing to promote
    if state is not None and state.challenger_version == challenger:
        return  # that one was rolled out already
    start_rollout(plan, base_dir, challenger, champion)


def operate(plan: Plan, base_dir: Path, options: RolloutOptions) -> RolloutReport:
    """The `OperableTarget.rollout` entry point: one rollout command, then where it stands."""
    challenger = None
    if options.action == "promote":
        _start_published_challenger(plan, base_dir)
        challenger = promote_now(plan, base_dir, options.reason or "promoted by hand")
    elif options.action == "rollback":
        challenger = rollback_now(plan, base_dir, options.reason)
    elif options.action == "run":
        challenger = run_rollout(
            plan,
            base_dir,
            time_scale=options.time_scale,
            url=options.url,
            max_seconds=options.max_seconds,
            on_decision=options.on_decision,
        )
    if not state_path(plan, base_dir).exists():
        return RolloutReport(status=None)
    doc = status(plan, base_dir)
    version = challenger.challenger_version if challenger is not None else None
    return RolloutReport(status=doc["status"], document=doc, challenger_version=version)
