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
import logging
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from specml.compiler.errors import Diagnostic, TargetError
from specml.compiler.ir import Plan
from specml.targets.local.state import load_state, workdir

SUMMARY = "summary.json"
MONITOR_STATE = "state.json"
RETRAIN_STATE = "retrain_state.json"
LABELS = "labels.json"
DEFAULT_WINDOW_ROWS = 50_000
log = logging.getLogger("specml.monitor")


@dataclass
class MonitorOptions:
    """Knobs of one pass: the clock, the request window, the live endpoint, what may act."""

    now: float | None = None
    window_rows: int = DEFAULT_WINDOW_ROWS
    min_rows: int = 100  # fewer logged requests in the window: PSI is noise, drift is not judged
    metrics_url: str | None = None  # default http://<host>:<port>/metrics of targets.local
    scrape: bool = True
    evidently: bool = True
    act: bool = True  # run rollback/retrain actions and triggers (False: report only)
    time_scale: float = 1.0  # passed to a started rollout
    console: Any = None
    registry: Any = None  # a rollout ModelRegistry (default: MLflow under the workdir)


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
    return workdir(plan, Path(base_dir).resolve()) / "monitor"


def _folder_version(folder: Path) -> str | None:
    """The registry version in a model folder's serving.json (None when unknown)."""
    try:
        version = json.loads((folder / "serving.json").read_text()).get("model_version")
    except (OSError, ValueError):
        return None
    return None if version is None else str(version)


def _holdout_metrics(state: dict[str, Any]) -> dict[str, float]:
    """Holdout metrics of the newest applied run (what the champion was judged on)."""
    for run in reversed(state.get("runs", [])):
        if run.get("status") == "applied" and run.get("metrics"):
            return {k: float(v) for k, v in run["metrics"].items()}
    return {}


def _training_watermark(wd: Path, state: dict[str, Any]) -> float | None:
    """Newest event time (unix s) in the training set of the newest applied run, if it is on disk."""
    import pandas as pd
    from specml.runtime.steps.common import TIMESTAMP

    runs = [r for r in state.get("runs", []) if r.get("status") == "applied" and r.get("run_id")]
    if not runs:
        return None
    files = sorted((wd / "runs" / runs[-1]["run_id"]).glob("build_training_set/*.parquet"))
    if not files:
        return None
    ts = pd.to_datetime(pd.read_parquet(files[0], columns=[TIMESTAMP])[TIMESTAMP], utc=True)
    return float(ts.max().timestamp()) if len(ts) else None


def _last_training_at(state: dict[str, Any]) -> float | None:
    runs = [r for r in state.get("runs", []) if r.get("status") == "applied" and r.get("started")]
    return datetime.fromisoformat(runs[-1]["started"]).timestamp() if runs else None


def _scrape(url: str, at: float) -> Any | None:
    """One /metrics snapshot, or None when the server does not answer."""
    from specml.runtime.monitor.live import parse_exposition

    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:  # noqa: S310 (loopback)
            return parse_exposition(response.read().decode(), at=at)
    except (OSError, ValueError):
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


def rollout_state_path(plan: Plan, base_dir: Path) -> Path:
    """Where the local rollout keeps its state (the rollout engineer's path when they define one)."""
    try:
        from specml.targets.local import rollout as local_rollout  # type: ignore[attr-defined]

        return Path(local_rollout.state_path(plan, Path(base_dir)))
    except (ImportError, AttributeError):
        return workdir(plan, Path(base_dir).resolve()) / "rollout" / "state.json"


def _registry(plan: Plan, base_dir: Path) -> Any:
    from specml.runtime.rollout.registry import MlflowRegistry

    uri = f"sqlite:///{(workdir(plan, Path(base_dir).resolve()) / 'mlflow.db').resolve()}"
    return MlflowRegistry(uri, plan.registry.champion_alias, plan.registry.challenger_alias)


def start_rollout(
    plan: Plan, base_dir: Path, challenger: str, champion: str | None, time_scale: float = 1.0
) -> dict[str, Any]:
    """Start the challenger's rollout (pending -> first step) and persist it; returns its state."""
    try:  # prefer the local target's own entry point when it exists
        from specml.targets.local import rollout as local_rollout  # type: ignore[attr-defined]

        start = local_rollout.start_rollout
    except (ImportError, AttributeError):
        start = None
    if start is not None:
        out = start(
            plan,
            Path(base_dir),
            challenger_version=challenger,
            champion_version=champion,
            time_scale=time_scale,
        )
        state = getattr(out, "state", out)
        return state.to_json() if hasattr(state, "to_json") else dict(state)
    from specml.runtime.rollout.controller import Controller

    ctl = Controller.start(
        plan,
        rollout_state_path(plan, base_dir),
        challenger,
        champion,
        registry=_registry(plan, base_dir),
        time_scale=time_scale,
    )
    ctl.begin()
    return ctl.state.to_json()


def rollback_rollout(
    plan: Plan, base_dir: Path, reason: str, registry: Any = None
) -> dict[str, Any]:
    """Roll back the rollout in progress (no-op with a note when none is running)."""
    from specml.runtime.rollout.controller import Controller

    path = rollout_state_path(plan, base_dir)
    if not path.exists():
        return {"action": "rollback", "done": False, "note": "no rollout in progress"}
    ctl = Controller.resume(path, registry=registry or _registry(plan, base_dir))
    if ctl.state.done:
        return {"action": "rollback", "done": False, "note": f"rollout already {ctl.state.status}"}
    ctl.rollback(reason)
    return {
        "action": "rollback",
        "done": True,
        "version": ctl.state.challenger_version,
        "reason": reason,
    }


def retrain(
    plan: Plan, base_dir: Path, reasons: list[str], time_scale: float = 1.0, console: Any = None
) -> dict[str, Any]:
    """Train again on current data; a new challenger (gates passed) starts its rollout."""
    from specml.targets.local.target import ApplyOptions, GateFailed, LocalTarget

    out: dict[str, Any] = {"reasons": reasons, "started_at": time.time()}
    try:
        result = LocalTarget().apply(
            plan, Path(base_dir), ApplyOptions(force=True, console=console)
        )
    except GateFailed as exc:
        out.update(status="gate_failed", error=str(exc))
        return out
    out.update(
        status="applied",
        run_id=result.run_id,
        model_version=result.model_version,
        promoted=result.promoted,
        aliases=result.aliases,
        metrics=result.metrics,
    )
    champion = result.aliases.get(plan.registry.champion_alias)
    if result.model_version and not result.promoted and plan.rollout is not None:
        state = start_rollout(plan, base_dir, result.model_version, champion, time_scale)
        out["rollout"] = {
            "status": state.get("status"),
            "step": state.get("step_index"),
            "challenger_version": state.get("challenger_version"),
            "champion_version": state.get("champion_version"),
        }
    return out


def monitor_once(
    plan: Plan,
    base_dir: Path,
    options: MonitorOptions | None = None,
    retrain_fn: Callable[..., dict[str, Any]] | None = None,
) -> MonitorResult:
    """One monitoring pass (see the module docstring); writes summary.json and the HTML report."""
    from specml.runtime.monitor.alerts import AlertMonitor
    from specml.runtime.monitor.drift import check_drift
    from specml.runtime.monitor.live import figures
    from specml.runtime.monitor.reference import ReferenceSet, find_reference
    from specml.runtime.monitor.requestlog import read_requests, request_log_dir
    from specml.runtime.monitor.triggers import (
        RetrainState,
        count_new_rows,
        data_watermark,
        due_triggers,
    )

    opts = options or MonitorOptions()
    base = Path(base_dir).resolve()
    now = time.time() if opts.now is None else opts.now
    wd = workdir(plan, base)
    out_dir = wd / "monitor"
    out_dir.mkdir(parents=True, exist_ok=True)
    folder = find_reference(wd)
    if folder is None:
        raise TargetError(
            [
                Diagnostic(
                    f"no drift reference under {wd}",
                    stage="target",
                    code="no_reference",
                    hint="run `specml apply SPEC --target local` first",
                )
            ]
        )
    refs = ReferenceSet.load(folder)
    mstate_path = out_dir / MONITOR_STATE
    mstate = json.loads(mstate_path.read_text()) if mstate_path.exists() else {}
    windows = [a.window_seconds for a in plan.alerts if a.kind in ("drift", "prediction_drift")]
    since = now - max(windows) if windows and max(windows) > 0 else None
    frame = read_requests(request_log_dir(wd), n=opts.window_rows, since=since)
    frame = frame[frame["ts"] <= now]
    names = list(refs.features.feature_names)
    drift = pred_drift = None
    if len(frame) >= max(opts.min_rows, 1):
        if not set(names) <= set(frame.columns):
            raise TargetError(
                [
                    Diagnostic(
                        f"the request log's features {list(frame.columns)[:8]} do not match the reference's "
                        f"{names[:8]}",
                        stage="target",
                        code="log_mismatch",
                        hint="clear <workdir>/monitor/requests after changing the model's features",
                    )
                ]
            )
        drift = check_drift(refs.features, frame[names])
        pred_cols = list(refs.predictions.feature_names) if refs.predictions is not None else []
        if refs.predictions is not None and set(pred_cols) <= set(frame.columns):
            # prediction drift is the champion's: leave out canary/challenger answers
            version = _folder_version(folder)
            mine = frame[frame["model_version"] == version] if version is not None else frame
            if len(mine):
                pred_drift = check_drift(refs.predictions, mine[pred_cols])
    live = None
    if opts.scrape:
        local = plan.targets.local
        url = opts.metrics_url or f"http://{local.host}:{local.port}/metrics"
        snap = _scrape(url, now)
        if snap is not None:
            before = _snapshot_from(mstate.get("last_scrape"))
            live = figures(snap.minus(before) if before is not None else snap)
            mstate["last_scrape"] = _snapshot_json(snap)
    state = load_state(wd) or {}
    holdout = _holdout_metrics(state)
    labels_path = out_dir / LABELS
    _refresh_posted_labels(plan, base, wd, labels_path)
    live_metrics = json.loads(labels_path.read_text())["metrics"] if labels_path.exists() else None

    actions: list[dict[str, Any]] = []
    retrain_requests: list[str] = []

    def notify(event: Any) -> None:
        actions.append({"action": "notify", "alert_id": event.alert_id, "level": event.level})

    def rollback(event: Any) -> None:
        reason = f"alert {event.alert_id} critical ({event.metric} {event.value:.4g})"
        actions.append(
            rollback_rollout(plan, base, reason, opts.registry)
            if opts.act
            else {"action": "rollback", "done": False, "note": "report only"}
        )

    def retrain_action(event: Any) -> None:
        retrain_requests.append(f"alert '{event.alert_id}' critical (action retrain)")
        actions.append({"action": "retrain", "alert_id": event.alert_id, "requested": True})

    monitor = AlertMonitor(
        plan, out_dir, callbacks={"notify": notify, "rollback": rollback, "retrain": retrain_action}
    )
    monitor.restore(mstate.get("alerts", {}))
    events = monitor.observe(
        now,
        live=live,
        drift=drift,
        prediction_drift=pred_drift,
        holdout_metrics=holdout if live_metrics is not None else None,
        live_metrics=live_metrics,
    )
    levels = {a.id: monitor.firing.get(a.id, "ok") for a in plan.alerts}
    mstate["alerts"] = monitor.snapshot()

    html_path = None
    if opts.evidently and drift is not None and refs.sample is not None:
        from specml.runtime.monitor.evidently_report import evidently_psi

        threshold = (
            next((a.warn or a.critical for a in plan.alerts if a.kind == "drift"), None) or 0.1
        )
        cols = [c for c in names if c in refs.sample.columns]
        html_path = evidently_psi(
            refs.sample, frame, cols, threshold=threshold, out_dir=out_dir, ours=drift
        ).html_path

    rstate = RetrainState.load(out_dir / RETRAIN_STATE)
    rstate.alert_levels = dict(levels)
    rstate.holdout_metrics = holdout
    rstate.live_metrics = dict(live_metrics or {})
    rstate.last_training_at = _last_training_at(state)
    if plan.retraining is not None and any(t.kind == "new_rows" for t in plan.retraining.triggers):
        try:
            trained = _training_watermark(wd, state)
            if trained is not None:
                rstate.data_watermark = trained
            elif rstate.data_watermark is None:
                rstate.data_watermark = data_watermark(plan, base)
            rstate.new_rows = count_new_rows(plan, base, rstate.data_watermark)
        except (TargetError, KeyError, ValueError, OSError):
            rstate.new_rows = None
    reasons = due_triggers(plan, rstate, now)
    in_cooldown = (
        rstate.last_retrain_at is not None
        and plan.retraining is not None
        and now - rstate.last_retrain_at < plan.retraining.cooldown_seconds
    )
    if not reasons and not in_cooldown:
        reasons = retrain_requests
    retrained = None
    if reasons and opts.act:
        rstate.last_retrain_at = now
        rstate.save(out_dir / RETRAIN_STATE)  # before training: a crash must not retrain in a loop
        retrained = (retrain_fn or retrain)(
            plan, base, reasons, time_scale=opts.time_scale, console=opts.console
        )
        if retrained.get("status") == "applied":
            try:
                rstate.data_watermark = data_watermark(plan, base)
                rstate.new_rows = 0
            except (TargetError, KeyError, ValueError):
                pass
    rstate.save(out_dir / RETRAIN_STATE)

    summary: dict[str, Any] = {
        "system": plan.system.name,
        "at": now,
        "reference": str(folder),
        "requests": int(len(frame)),
        "min_requests_for_drift": opts.min_rows,
        "drift": drift.to_json() if drift is not None else None,
        "prediction_drift": pred_drift.to_json() if pred_drift is not None else None,
        "live": live.to_json() if live is not None else None,
        "holdout_metrics": holdout,
        "live_metrics": live_metrics,
        "alerts": levels,
        "events": [e.to_json() for e in events],
        "actions": actions,
        "retrain_reasons": reasons,
        "retrain": retrained,
        "evidently_html": str(html_path) if html_path else None,
    }
    mstate["last_run"] = now
    tmp = mstate_path.with_name(mstate_path.name + ".tmp")
    tmp.write_text(json.dumps(mstate, sort_keys=True, indent=2) + "\n")
    tmp.replace(mstate_path)
    summary_path = out_dir / SUMMARY
    summary_path.write_text(json.dumps(summary, sort_keys=True, indent=2, default=str) + "\n")
    return MonitorResult(summary, summary["events"], actions, retrained, summary_path, html_path)


def _refresh_posted_labels(plan: Plan, base: Path, wd: Path, labels_path: Path) -> None:
    """Labels POSTed since the live metrics were last computed are joined in now."""
    from specml.runtime.monitor.labels import posted_labels_dir, posted_labels_mtime

    posted = posted_labels_mtime(posted_labels_dir(wd))
    if posted == 0.0 or (labels_path.exists() and labels_path.stat().st_mtime >= posted):
        return
    try:
        ingest_labels(plan, base, None)
    except TargetError as exc:  # e.g. no label matches a logged prediction yet: keep the last
        log.warning("posted labels not used: %s", exc.diagnostics[0].message)


def ingest_labels(plan: Plan, base_dir: Path, label_file: Path | None = None) -> dict[str, Any]:
    """Join delayed labels (a file, or those POSTed to the server when `label_file` is None) to
    the request log; save the live metrics for metric-drop alerts."""
    from specml.runtime.monitor.labels import (
        live_metrics,
        posted_labels_dir,
        read_label_file,
        read_posted_labels,
    )
    from specml.runtime.monitor.requestlog import read_requests, request_log_dir
    from specml.runtime.steps.common import entity_join_keys

    wd = workdir(plan, Path(base_dir).resolve())
    if label_file is None:
        labels = read_posted_labels(posted_labels_dir(wd))
        if labels is None:
            raise TargetError(
                [
                    Diagnostic(
                        f"no labels were posted to the server (none under {posted_labels_dir(wd)})",
                        stage="target",
                        code="missing_labels",
                        hint="POST them to /v1/models/<name>/labels, or pass a label FILE",
                    )
                ]
            )
    else:
        labels = read_label_file(label_file)
    requests = read_requests(request_log_dir(wd))
    if not len(requests):
        raise TargetError(
            [
                Diagnostic(
                    "the request log is empty: no prediction to label",
                    stage="target",
                    code="no_requests",
                    hint="serve some traffic first",
                )
            ]
        )
    result = live_metrics(plan, labels, requests, entity_join_keys(plan))
    result["at"] = time.time()
    result["source"] = str(label_file) if label_file is not None else "posted"
    out = wd / "monitor" / LABELS
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, sort_keys=True, indent=2) + "\n")
    return result
