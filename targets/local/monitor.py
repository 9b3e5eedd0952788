"""`specml monitor` for the local target: drift, alerts, actions and retraining triggers, one pass.

One `monitor_once` reads the recent request log (<workdir>/monitor/requests), checks it against
the champion's training reference (serving/current/drift_reference.npz, written at export), scrapes
the live server's /metrics when it answers, joins labels POSTed to the server since the last pass
(live model metrics, for metric-drop alerts), evaluates the spec's alerts (levels persist across
runs in monitor/state.json), writes summary.json + Evidently's evidently_drift.html under
<workdir>/monitor/, runs the actions of newly critical alerts (notify / rollback / retrain), then
the retraining triggers: a due retrain trains again on current data (LocalTarget.apply, force),
which registers a challenger and applies the gates, and starts its rollout.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from specml.compiler.errors import Diagnostic, TargetError
from specml.compiler.ir import Plan
from specml.runtime.files import write_json_atomic
from specml.runtime.layout import Workdir
from specml.targets.base import MonitorOptions
from specml.targets.local import rollout as local_rollout
from specml.targets.local.actions import retrain, rollback_rollout
from specml.targets.local.labels import ingest_labels, read_live_metrics, refresh_posted_labels
from specml.targets.local.monitor_live import Observation, live_figures, retrain_if_due
from specml.targets.local.publish import folder_version
from specml.targets.local.state import load_state, workdir

__all__ = [
    "MonitorOptions",
    "MonitorResult",
    "ingest_labels",
    "monitor_dir",
    "monitor_once",
    "rollout_state_path",
]

SUMMARY = "summary.json"
MONITOR_STATE = "state.json"


@dataclass
class MonitorResult:
    """What one pass found and did."""

    summary: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)
    retrain: dict[str, Any] | None = None
    summary_path: Path | None = None
    html_path: Path | None = None


def monitor_dir(plan: Plan, base_dir: Path) -> Path:
    """<workdir>/monitor."""
    return Workdir(workdir(plan, Path(base_dir).resolve())).monitor


def rollout_state_path(plan: Plan, base_dir: Path) -> Path:
    """Where the local rollout keeps its state."""
    return local_rollout.state_path(plan, Path(base_dir).resolve())


def _holdout_metrics(state: dict[str, Any]) -> dict[str, float]:
    """Holdout metrics of the newest applied run (what the champion was judged on)."""
    for run in reversed(state.get("runs", [])):
        if run.get("status") == "applied" and run.get("metrics"):
            return {k: float(v) for k, v in run["metrics"].items()}
    return {}


def _reference(wd: Workdir) -> tuple[Path, Any]:
    """The champion's drift reference folder and its loaded ReferenceSet."""
    from specml.runtime.monitor.reference import ReferenceSet, find_reference

    folder = find_reference(wd.root)
    if folder is None:
        raise TargetError(
            [
                Diagnostic(
                    f"no drift reference under {wd.root}",
                    stage="target",
                    code="no_reference",
                    hint="run `specml apply SPEC --target local` first",
                )
            ]
        )
    return folder, ReferenceSet.load(folder)


def _drift(plan: Plan, wd: Workdir, obs: Observation, opts: MonitorOptions) -> None:
    """Feature drift of the logged window, and the champion's prediction drift."""
    from specml.runtime.monitor.drift import check_drift
    from specml.runtime.monitor.requestlog import read_requests, request_log_dir

    windows = [a.window_seconds for a in plan.alerts if a.kind in ("drift", "prediction_drift")]
    since = obs.now - max(windows) if windows and max(windows) > 0 else None
    frame = read_requests(request_log_dir(wd.root), n=opts.window_rows, since=since)
    obs.frame = frame = frame[frame["ts"] <= obs.now]
    refs, names = obs.refs, obs.names
    if len(frame) < max(opts.min_rows, 1):
        return
    if not set(names) <= set(frame.columns):
        raise TargetError(
            [
                Diagnostic(
                    f"the request log's features {list(frame.columns)[:8]} do not match the "
                    f"reference's {names[:8]}",
                    stage="target",
                    code="log_mismatch",
                    hint="clear <workdir>/monitor/requests after changing the model's features",
                )
            ]
        )
    obs.drift = check_drift(refs.features, frame[names])
    pred_cols = list(refs.predictions.feature_names) if refs.predictions is not None else []
    if refs.predictions is not None and set(pred_cols) <= set(frame.columns):
        # prediction drift is the champion's: leave out canary/challenger answers
        version = folder_version(obs.reference)
        mine = frame[frame["model_version"] == version] if version is not None else frame
        if len(mine):
            obs.prediction_drift = check_drift(refs.predictions, mine[pred_cols])


def _alerts(plan: Plan, base: Path, wd: Workdir, obs: Observation, opts: MonitorOptions) -> None:
    """Evaluate the alerts; newly critical ones run their action (notify, rollback, retrain)."""
    from specml.runtime.monitor.alerts import AlertMonitor

    def notify(event: Any) -> None:
        obs.actions.append({"action": "notify", "alert_id": event.alert_id, "level": event.level})

    def rollback(event: Any) -> None:
        reason = f"alert {event.alert_id} critical ({event.metric} {event.value:.4g})"
        obs.actions.append(
            rollback_rollout(plan, base, reason, opts.registry)
            if opts.act
            else {"action": "rollback", "done": False, "note": "report only"}
        )

    def retrain_action(event: Any) -> None:
        obs.retrain_requests.append(f"alert '{event.alert_id}' critical (action retrain)")
        obs.actions.append({"action": "retrain", "alert_id": event.alert_id, "requested": True})

    monitor = AlertMonitor(
        plan,
        wd.monitor,
        callbacks={"notify": notify, "rollback": rollback, "retrain": retrain_action},
    )
    monitor.restore(obs.mstate.get("alerts", {}))
    obs.events = monitor.observe(
        obs.now,
        live=obs.live,
        drift=obs.drift,
        prediction_drift=obs.prediction_drift,
        holdout_metrics=obs.holdout if obs.live_metrics is not None else None,
        live_metrics=obs.live_metrics,
    )
    obs.levels = {a.id: monitor.firing.get(a.id, "ok") for a in plan.alerts}
    obs.mstate["alerts"] = monitor.snapshot()


def _evidently(plan: Plan, wd: Workdir, obs: Observation, opts: MonitorOptions) -> Path | None:
    """Evidently's HTML drift report beside ours (None when skipped)."""
    if not opts.evidently or obs.drift is None or obs.refs.sample is None:
        return None
    from specml.runtime.monitor.evidently_report import evidently_psi

    threshold = next((a.warn or a.critical for a in plan.alerts if a.kind == "drift"), None) or 0.1
    cols = [c for c in obs.names if c in obs.refs.sample.columns]
    return evidently_psi(
        obs.refs.sample, obs.frame, cols, threshold=threshold, out_dir=wd.monitor, ours=obs.drift
    ).html_path


def _summary(plan: Plan, obs: Observation, opts: MonitorOptions, html: Path | None) -> dict:
    """The pass as a JSON-ready dict (summary.json, `--format json`)."""
    return {
        "system": plan.system.name,
        "at": obs.now,
        "reference": str(obs.reference),
        "requests": int(len(obs.frame)),
        "min_requests_for_drift": opts.min_rows,
        "drift": obs.drift.to_json() if obs.drift is not None else None,
        "prediction_drift": (
            obs.prediction_drift.to_json() if obs.prediction_drift is not None else None
        ),
        "live": obs.live.to_json() if obs.live is not None else None,
        "holdout_metrics": obs.holdout,
        "live_metrics": obs.live_metrics,
        "alerts": obs.levels,
        "events": [e.to_json() for e in obs.events],
        "actions": obs.actions,
        "retrain_reasons": obs.reasons,
        "retrain": obs.retrained,
        "evidently_html": str(html) if html else None,
    }


def monitor_once(
    plan: Plan,
    base_dir: Path,
    options: MonitorOptions | None = None,
    retrain_fn: Callable[..., dict[str, Any]] | None = None,
) -> MonitorResult:
    """One monitoring pass (see the module docstring); writes summary.json and the HTML report."""
    opts = options or MonitorOptions()
    base = Path(base_dir).resolve()
    wd = Workdir(workdir(plan, base))
    wd.monitor.mkdir(parents=True, exist_ok=True)
    reference, refs = _reference(wd)
    mstate_path = wd.monitor / MONITOR_STATE
    mstate = json.loads(mstate_path.read_text()) if mstate_path.exists() else {}
    state = load_state(wd.root) or {}
    obs = Observation(
        now=time.time() if opts.now is None else opts.now,
        reference=reference,
        refs=refs,
        mstate=mstate,
        state=state,
        holdout=_holdout_metrics(state),
    )
    _drift(plan, wd, obs, opts)
    if opts.scrape:
        obs.live = live_figures(plan, obs, opts.metrics_url)
    refresh_posted_labels(plan, base)
    obs.live_metrics = read_live_metrics(wd)
    _alerts(plan, base, wd, obs, opts)
    html = _evidently(plan, wd, obs, opts)
    retrain_if_due(plan, base, wd, obs, opts, retrain_fn or retrain)
    summary = _summary(plan, obs, opts, html)
    mstate["last_run"] = obs.now
    write_json_atomic(mstate_path, mstate, durable=False)
    summary_path = write_json_atomic(wd.monitor / SUMMARY, summary, durable=False)
    return MonitorResult(summary, summary["events"], obs.actions, obs.retrained, summary_path, html)
