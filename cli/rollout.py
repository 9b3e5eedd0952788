"""`specml rollout status|promote|rollback|run SPEC`: drive the local target's rollout.

Only typer is imported here; the controller, MLflow and the spec compiler load inside commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

rollout_app = typer.Typer(
    name="rollout",
    help="Show or drive the rollout of a challenger against the champion (local target).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

ArgsArg = Annotated[list[str], typer.Argument(help="Spec file, then optional key=value overrides.")]
FormatOpt = Annotated[str, typer.Option("--format", "-f", help="human (default) or json.")]
OverlayOpt = Annotated[list[str] | None, typer.Option("--overlay", "-O", help="Overlay to merge.")]


def _run(fmt: str, args: list[str], overlay: list[str] | None, body: Any) -> None:
    """Load the Plan and run `body(plan, base_dir, reporter)` under the main CLI's error guard."""
    from specml.cli.main import _guard, _load_plan, _one_spec
    from specml.cli.output import Reporter

    reporter = Reporter(fmt)

    def wrapped() -> int:
        spec, overrides = _one_spec(args, reporter)
        plan = _load_plan(spec, overlay or [], overrides, reporter)
        return int(body(plan, spec.parent.resolve(), reporter) or 0)

    _guard(reporter, wrapped)


def _human_status(doc: dict[str, Any]) -> list[str]:
    """The status document as lines of text."""
    step = doc["step"]
    traffic = doc["traffic"]
    lines = [
        f"model {doc['model']}: challenger v{doc['challenger_version']} vs champion "
        f"v{doc['champion_version']}: {doc['status']}",
    ]
    if step is not None:
        lines.append(
            f"step {step['index'] + 1}/{step['of']} ({step['kind']}): held {step['held_seconds']:.4g}s"
            f" of {step['hold_seconds']:.4g}s"
        )
    lines.append(
        f"traffic: challenger {traffic['challenger_percent']:g}% / champion "
        f"{traffic['champion_percent']:g}%, shadow mirror {traffic['shadow_sample_percent']:g}%"
    )
    for name, row in doc["slo"].items():
        live = "n/a" if row["live"] is None else f"{row['live']:.4g}"
        verdict = {True: "ok", False: "BREACH", None: "no data"}[row["ok"]]
        lines.append(f"  {name}: live {live} (target {row['target']:g}) {verdict}")
    lines.append(
        f"failures in a row: {doc['consecutive_failures']}/{doc['failure_limit']}, "
        f"analysis every {doc['analysis_interval_seconds']:.4g}s"
    )
    if doc["reason"]:
        lines.append(f"reason: {doc['reason']}")
    lines.append("history:")
    for h in doc["history"]:
        lines.append(
            f"  {_clock(h['at'])} {h['from'] or '-'} -> {h['to']} at {h['traffic_percent']:g}%: "
            f"{h['reason']}"
        )
    return lines


def _clock(at: float | None) -> str:
    """A history time as UTC wall-clock text."""
    from datetime import UTC, datetime

    if at is None:
        return "?"
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def _show(reporter: Any, doc: dict[str, Any], headline: str) -> None:
    if reporter.fmt == "json":
        reporter.document["rollout"] = doc
        return
    reporter.ok(headline)
    for line in _human_status(doc):
        reporter.note(line)


@rollout_app.command()
def status(args: ArgsArg, format: FormatOpt = "human", overlay: OverlayOpt = None) -> None:
    """Step, traffic split, live SLO figures (last analysis) and history of the rollout."""

    def body(plan: Any, base: Path, reporter: Any) -> int:
        from specml.targets.local.rollout import status as rollout_status

        doc = rollout_status(plan, base)
        _show(reporter, doc, f"rollout {doc['status']}")
        return 0

    _run(format, args, overlay, body)


@rollout_app.command()
def promote(
    args: ArgsArg,
    reason: Annotated[
        str, typer.Option(help="Why (kept in the history and on the version).")
    ] = "promoted by hand",
    format: FormatOpt = "human",
    overlay: OverlayOpt = None,
) -> None:
    """Promote the challenger now: MLflow champion alias moves, serving/current gets it."""

    def body(plan: Any, base: Path, reporter: Any) -> int:
        from specml.targets.local.rollout import promote_now, status

        state = promote_now(plan, base, reason)
        _show(reporter, status(plan, base), f"v{state.challenger_version} promoted to champion")
        return 0

    _run(format, args, overlay, body)


@rollout_app.command()
def rollback(
    args: ArgsArg,
    reason: Annotated[str, typer.Option(help="Why (required: tagged on the rejected version).")],
    format: FormatOpt = "human",
    overlay: OverlayOpt = None,
) -> None:
    """Roll back now: 100 % to the champion, the challenger version marked rejected."""

    def body(plan: Any, base: Path, reporter: Any) -> int:
        from specml.targets.local.rollout import rollback_now, status

        state = rollback_now(plan, base, reason)
        _show(reporter, status(plan, base), f"v{state.challenger_version} rolled back: {reason}")
        return 0

    _run(format, args, overlay, body)


@rollout_app.command()
def run(
    args: ArgsArg,
    time_scale: Annotated[
        float, typer.Option("--time-scale", help="Shrink holds and intervals (0.01: 100x faster).")
    ] = 1.0,
    url: Annotated[
        str | None, typer.Option(help="Server base URL (default: the spec's host:port).")
    ] = None,
    max_seconds: Annotated[
        float | None, typer.Option(help="Stop after this long (resumable).")
    ] = None,
    format: FormatOpt = "human",
    overlay: OverlayOpt = None,
) -> None:
    """Run the controller (or resume it) until the challenger is promoted or rolled back.

    A resumed rollout keeps the time scale it started with. Exit 0: promoted (or stopped by
    --max-seconds, resumable); 3: rolled back.
    """

    def body(plan: Any, base: Path, reporter: Any) -> int:
        from specml.targets.local.rollout import run_rollout, status

        if time_scale <= 0:
            from specml.compiler.errors import Diagnostic, TargetError

            raise TargetError(
                [
                    Diagnostic(
                        "--time-scale must be > 0",
                        stage="usage",
                        code="usage",
                        hint="e.g. --time-scale 0.01",
                    )
                ]
            )

        def say(decision: Any) -> None:
            shown = decision.action not in ("hold", "no_data") or decision.breaches
            if reporter.fmt == "human" and shown:
                reporter.note(
                    f"{decision.action}: {decision.status} step {decision.step_index} "
                    f"at {decision.traffic_percent:g}% {'; '.join(decision.breaches)}"
                    + (f" ({decision.consecutive_failures} in a row)" if decision.breaches else "")
                )

        state = run_rollout(
            plan, base, time_scale=time_scale, url=url, max_seconds=max_seconds, on_decision=say
        )
        _show(reporter, status(plan, base), f"rollout {state.status}")
        return 0 if state.status != "rolled_back" else 3

    _run(format, args, overlay, body)
