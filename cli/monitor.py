"""`specml monitor SPEC` and `specml labels SPEC FILE`: drift, alerts and retraining triggers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer


def _human(reporter: Any, summary: dict[str, Any]) -> None:
    """Per-feature PSI/KS, alert levels, actions and a retrain, as plain lines."""
    reporter.ok(f"monitored {summary['system']}: {summary['requests']} logged requests")
    out, _ = reporter._consoles()
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


def _drive(plan: Any, base: Path, time_scale: float) -> Any:
    """Run the local rollout (targets/local/rollout.py run_rollout) in a daemon thread."""
    import threading

    from specml.targets.local.rollout import run_rollout

    thread = threading.Thread(
        target=run_rollout,
        args=(plan, base),
        kwargs={"time_scale": time_scale},
        name="specml-rollout",
        daemon=True,
    )
    thread.start()
    return thread


def register(app: typer.Typer) -> None:
    """Add the monitoring commands to the main app (imports stay lazy: validate starts fast)."""

    @app.command()
    def monitor(
        args: Annotated[
            list[str], typer.Argument(help="Spec file, then optional key=value overrides.")
        ],
        once: Annotated[
            bool, typer.Option("--once/--watch", help="One pass (default) or loop.")
        ] = True,
        interval: Annotated[
            float, typer.Option(help="Seconds between passes with --watch.")
        ] = 60.0,
        window: Annotated[
            int, typer.Option(help="Newest logged requests to check at most.")
        ] = 50_000,
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
        format: Annotated[str, typer.Option("--format", "-f", help="human or json.")] = "human",
    ) -> None:
        """Check logged traffic for drift (PSI, KS), evaluate alerts, run actions and retraining."""
        import json
        import time

        from specml.cli.main import _guard, _load_plan, _one_spec
        from specml.cli.output import Reporter

        reporter = Reporter(format)

        def body() -> int:
            from specml.targets.local.monitor import MonitorOptions, monitor_once

            spec, overrides = _one_spec(args, reporter)
            plan = _load_plan(spec, [], overrides, reporter)
            options = MonitorOptions(
                window_rows=window,
                min_rows=min_requests,
                metrics_url=metrics_url,
                evidently=not no_evidently,
                act=not report_only,
                time_scale=time_scale,
            )
            driver: Any = None
            while True:
                result = monitor_once(plan, spec.parent.resolve(), options)
                if reporter.fmt == "json" and not once:  # one JSON line per pass
                    print(json.dumps(result.summary, sort_keys=True, default=str), flush=True)
                elif reporter.fmt == "json":
                    reporter.document["result"] = result.summary
                else:
                    _human(reporter, result.summary)
                if once:
                    return 0
                started = (result.retrain or {}).get("rollout")
                if drive_rollouts and started and (driver is None or not driver.is_alive()):
                    driver = _drive(plan, spec.parent.resolve(), time_scale)
                time.sleep(interval)

        _guard(reporter, body)

    @app.command()
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
        format: Annotated[str, typer.Option("--format", "-f", help="human or json.")] = "human",
    ) -> None:
        """Ingest delayed labels (a file, or those POSTed to the server): live metrics on logged
        predictions, then metric-drop alerts."""
        from specml.cli.main import EXIT_USAGE, _fail, _guard, _load_plan
        from specml.cli.output import Reporter

        reporter = Reporter(format)

        def body() -> int:
            from specml.targets.local.monitor import MonitorOptions, ingest_labels, monitor_once

            if not args:
                _fail(
                    reporter,
                    EXIT_USAGE,
                    "expected SPEC (and a label FILE, or labels POSTed to the server)",
                    hint="specml labels SPEC [FILE]",
                )
            spec, rest = Path(args[0]), list(args[1:])
            has_file = bool(rest) and ("=" not in rest[0] or Path(rest[0]).exists())
            label_file = Path(rest.pop(0)) if has_file else None
            overrides = rest
            plan = _load_plan(spec, [], overrides, reporter)
            result = ingest_labels(plan, spec.parent.resolve(), label_file)
            metrics = ", ".join(f"{k} {v:.4f}" for k, v in result["metrics"].items())
            reporter.ok(
                f"{result['matched']} of {result['labels']} labels matched logged predictions: "
                f"{metrics}",
                metrics=result["metrics"],
            )
            if not no_monitor:
                summary = monitor_once(
                    plan, spec.parent.resolve(), MonitorOptions(evidently=False)
                ).summary
                if reporter.fmt == "json":
                    reporter.document["result"] = summary
                else:
                    _human(reporter, summary)
            return 0

        _guard(reporter, body)
