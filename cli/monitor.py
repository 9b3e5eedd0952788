"""`specml monitor SPEC` and `specml labels SPEC FILE`: drift, alerts and retraining triggers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from specml.cli.common import EXIT_OK, EXIT_USAGE, Command, Format, FormatOpt, TargetOpt, operable


def _human(reporter: Any, summary: dict[str, Any]) -> None:
    """Per-feature PSI/KS, alert levels, actions and a retrain, as plain lines."""
    reporter.ok(f"monitored {summary['system']}: {summary['requests']} logged requests")
    out = reporter.out
    drift = summary.get("drift") or {}
    for name, d in (drift.get("features") or {}).items():
        out.print(f"  {name:<40} psi {d['psi']:.4f}  ks {d['ks']:.4f}  n {d['n']}", markup=False)
    for name, d in ((summary.get("prediction_drift") or {}).get("features") or {}).items():
        out.print(
            f"  {name:<40} psi {d['psi']:.4f}  ks {d['ks']:.4f}  (prediction drift)", markup=False
        )
    if summary.get("live"):
        live = summary["live"]
        out.print(
            f"  live: p95 {live.get('p95_latency_ms')} ms, error rate {live.get('error_rate')}, "
            f"requests {live.get('requests')}",
            markup=False,
        )
    for alert_id, level in summary.get("alerts", {}).items():
        out.print(f"  alert {alert_id}: {level}", markup=False)
    for action in summary.get("actions", []):
        out.print(f"  action: {action}", markup=False)
    if summary.get("retrain"):
        out.print(f"  retrain: {summary['retrain']}", markup=False)
    elif summary.get("retrain_reasons"):
        out.print(
            f"  retrain due, not run (--report-only): {'; '.join(summary['retrain_reasons'])}",
            markup=False,
        )
    if summary.get("evidently_html"):
        out.print(f"  report: {summary['evidently_html']}", markup=False)


def _drive(target: Any, plan: Any, base: Path, time_scale: float) -> Any:
    """Drive the rollout a retrain started, in a daemon thread (the target's rollout `run`)."""
    import threading

    from specml.targets.base import RolloutOptions

    thread = threading.Thread(
        target=target.rollout,
        args=(plan, base, RolloutOptions("run", time_scale=time_scale)),
        name="specml-rollout",
        daemon=True,
    )
    thread.start()
    return thread


def _report(cmd: Command, summary: dict[str, Any], once: bool) -> None:
    """One pass: into the JSON document (one JSON line per pass with --watch), or as text."""
    import json

    if cmd.reporter.fmt == "json" and not once:
        cmd.reporter.line(json.dumps(summary, sort_keys=True, default=str))
    elif cmd.reporter.fmt == "json":
        cmd.reporter.document["result"] = summary
    else:
        _human(cmd.reporter, summary)


def monitor(
    args: Annotated[
        list[str], typer.Argument(help="Spec file, then optional key=value overrides.")
    ],
    once: Annotated[
        bool, typer.Option("--once/--watch", help="One pass (default) or loop.")
    ] = True,
    interval: Annotated[float, typer.Option(help="Seconds between passes with --watch.")] = 60.0,
    window: Annotated[int, typer.Option(help="Newest logged requests to check at most.")] = 50_000,
    min_requests: Annotated[
        int, typer.Option(help="Fewer requests in the window: no drift verdict.")
    ] = 100,
    metrics_url: Annotated[
        str | None, typer.Option(help="Server /metrics URL (default: the spec's).")
    ] = None,
    no_evidently: Annotated[
        bool, typer.Option("--no-evidently", help="Skip the HTML report.")
    ] = False,
    report_only: Annotated[
        bool, typer.Option("--report-only", help="Evaluate, but run no action.")
    ] = False,
    time_scale: Annotated[
        float, typer.Option(help="Time scale for a rollout a retrain starts.")
    ] = 1.0,
    drive_rollouts: Annotated[
        bool,
        typer.Option(
            "--drive-rollouts",
            help="With --watch: also run the rollout a retrain starts (needs the "
            "server up; else run `specml rollout run SPEC`).",
        ),
    ] = False,
    target: TargetOpt = "local",
    format: FormatOpt = Format.human,
) -> None:
    """Check logged traffic for drift (PSI, KS), evaluate alerts, run actions and retraining."""
    import time

    from specml.targets.base import MonitorOptions

    cmd = Command(format.value)
    options = MonitorOptions(
        window_rows=window,
        min_rows=min_requests,
        metrics_url=metrics_url,
        evidently=not no_evidently,
        act=not report_only,
        time_scale=time_scale,
    )

    def body() -> int:
        plan = cmd.load(args)
        tgt = operable(target)
        driver: Any = None
        while True:
            summary = tgt.monitor(plan, cmd.base_dir, options)
            _report(cmd, summary, once)
            if once:
                return EXIT_OK
            started = (summary.get("retrain") or {}).get("rollout")
            if drive_rollouts and started and (driver is None or not driver.is_alive()):
                driver = _drive(tgt, plan, cmd.base_dir, time_scale)
            time.sleep(interval)

    cmd.run(body)


def labels(
    args: Annotated[
        list[str],
        typer.Argument(
            help="Spec file, then the label file (csv/parquet/jsonl); without a file, the "
            "labels POSTed to the server (/v1/models/NAME/labels). Overrides may follow."
        ),
    ],
    no_monitor: Annotated[
        bool, typer.Option("--no-monitor", help="Only store the live metrics.")
    ] = False,
    target: TargetOpt = "local",
    format: FormatOpt = Format.human,
) -> None:
    """Ingest delayed labels (a file, or those POSTed to the server): live metrics on logged
    predictions, then metric-drop alerts."""
    from specml.targets.base import MonitorOptions

    cmd = Command(format.value)

    def body() -> int:
        if not args:
            cmd.fail(
                EXIT_USAGE,
                "expected SPEC (and a label FILE, or labels POSTed to the server)",
                hint="specml labels SPEC [FILE]",
            )
        rest = list(args[1:])
        has_file = bool(rest) and ("=" not in rest[0] or Path(rest[0]).exists())
        label_file = Path(rest.pop(0)) if has_file else None
        plan = cmd.load([args[0], *rest])
        tgt = operable(target)
        result = tgt.ingest_labels(plan, cmd.base_dir, label_file)
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in result["metrics"].items())
        cmd.reporter.ok(
            f"{result['matched']} of {result['labels']} labels matched logged predictions: "
            f"{metrics}",
            metrics=result["metrics"],
        )
        if not no_monitor:
            summary = tgt.monitor(plan, cmd.base_dir, MonitorOptions(evidently=False))
            _report(cmd, summary, once=True)
        return EXIT_OK

    cmd.run(body)


def register(app: typer.Typer) -> None:
    """Add the monitoring commands to the main app."""
    app.command()(monitor)
    app.command()(labels)
