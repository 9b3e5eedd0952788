"""`specml rollout status|promote|rollback|run SPEC`: drive a target's rollout (OperableTarget).

Only typer is imported here; the controller, MLflow and the spec compiler load inside commands.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from specml.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    Command,
    Format,
    FormatOpt,
    OverlayOpt,
    SpecArgs,
    TargetOpt,
    operable,
    parse_endpoints,
)

rollout_app = typer.Typer(
    name="rollout",
    help="Show or drive the rollout of a challenger against the champion.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _operate(
    fmt: Format, args: list[str], overlay: list[str] | None, target: str, options: Any
) -> None:
    """Load the Plan, run one rollout command on the target, report where the rollout stands."""
    cmd = Command(fmt.value)

    def body() -> int:
        plan = cmd.load(args, overlay)
        opts = options() if callable(options) else options  # built here: usage errors are reported
        report = operable(target).rollout(plan, cmd.base_dir, opts)
        if report.status is None:
            cmd.reporter.ok("no rollout: nothing has been rolled out yet", rollout=None)
            if cmd.reporter.fmt == "json":
                cmd.reporter.document["rollout"] = None
            return EXIT_OK
        _show(cmd.reporter, report.document, _headline(opts, report))
        return EXIT_FAILED if opts.action == "run" and report.status == "rolled_back" else EXIT_OK

    cmd.run(body)


def _headline(options: Any, report: Any) -> str:
    version = report.challenger_version
    if options.action == "promote":
        return f"v{version} promoted to champion"
    if options.action == "rollback":
        return f"v{version} rolled back: {options.reason}"
    return f"rollout {report.status}"


def _human_status(doc: dict[str, Any]) -> list[str]:
    """The status document as lines of text."""
    step = doc["step"]
    traffic = doc["traffic"]
    lines = [
        f"model {doc['model']}: challenger v{doc['challenger_version']} vs champion "
        f"v{doc['champion_version']}: {doc['status']}",
    ]
    if doc.get("inference_service"):  # kubeflow: the object the controller keeps it on
        pct = doc["canary_traffic_percent"]
        lines.append(
            f"InferenceService {doc['inference_service']}: canaryTrafficPercent "
            f"{'unset (100 % on the latest revision)' if pct is None else pct}"
        )
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
def status(
    args: SpecArgs,
    format: FormatOpt = Format.human,
    overlay: OverlayOpt = None,
    target: TargetOpt = "local",
    endpoint: Annotated[
        list[str] | None,
        typer.Option(
            "--endpoint",
            help="A service the target reads, as ROLE=URL (kubeflow: kubernetes=URL); "
            "default: the kubeconfig.",
        ),
    ] = None,
) -> None:
    """Step, traffic split, live SLO figures (last analysis) and history of the rollout."""
    from specml.targets.base import RolloutOptions

    def options() -> RolloutOptions:
        return RolloutOptions("status", endpoints=parse_endpoints(endpoint or []))

    _operate(format, args, overlay, target, options)


@rollout_app.command()
def promote(
    args: SpecArgs,
    reason: Annotated[
        str, typer.Option(help="Why (kept in the history and on the version).")
    ] = "promoted by hand",
    format: FormatOpt = Format.human,
    overlay: OverlayOpt = None,
    target: TargetOpt = "local",
) -> None:
    """Promote the challenger now: the registry's champion alias moves, serving gets it."""
    from specml.targets.base import RolloutOptions

    _operate(format, args, overlay, target, RolloutOptions("promote", reason))


@rollout_app.command()
def rollback(
    args: SpecArgs,
    reason: Annotated[str, typer.Option(help="Why (required: tagged on the rejected version).")],
    format: FormatOpt = Format.human,
    overlay: OverlayOpt = None,
    target: TargetOpt = "local",
) -> None:
    """Roll back now: 100 % to the champion, the challenger version marked rejected."""
    from specml.targets.base import RolloutOptions

    _operate(format, args, overlay, target, RolloutOptions("rollback", reason))


class _Progress:
    """`rollout run` progress on stderr: every decision that changes something, and while a step
    holds, one line every `every_s` seconds (human output only)."""

    def __init__(self, fmt: Format, every_s: float = 10.0) -> None:
        import time

        self.human = fmt is Format.human
        self.every_s = every_s
        self.clock = time.monotonic
        self.last = float("-inf")

    def __call__(self, decision: Any) -> None:
        if not self.human:
            return
        holding = decision.action in ("hold", "no_data") and not decision.breaches
        if holding and self.clock() - self.last < self.every_s:
            return
        self.last = self.clock()
        line = (
            f"{decision.action}: {decision.status} step {decision.step_index} "
            f"at {decision.traffic_percent:g}%"
        )
        if decision.breaches:
            line += f" {'; '.join(decision.breaches)} ({decision.consecutive_failures} in a row)"
        typer.echo(line, err=True)


@rollout_app.command()
def run(
    args: SpecArgs,
    time_scale: Annotated[
        float, typer.Option("--time-scale", help="Shrink holds and intervals (0.01: 100x faster).")
    ] = 1.0,
    url: Annotated[
        str | None, typer.Option(help="Server base URL (default: the spec's host:port).")
    ] = None,
    max_seconds: Annotated[
        float | None, typer.Option(help="Stop after this long (resumable).")
    ] = None,
    format: FormatOpt = Format.human,
    overlay: OverlayOpt = None,
    target: TargetOpt = "local",
) -> None:
    """Run the controller (or resume it) until the challenger is promoted or rolled back.

    A resumed rollout keeps the time scale it started with. Exit 0: promoted (or stopped by
    --max-seconds, resumable); 3: rolled back.
    """
    from specml.targets.base import RolloutOptions

    if time_scale <= 0:
        Command(format.value).fail(EXIT_USAGE, "--time-scale must be > 0", "e.g. --time-scale 0.01")
    options = RolloutOptions(
        "run",
        time_scale=time_scale,
        url=url,
        max_seconds=max_seconds,
        on_decision=_Progress(format),
    )
    _operate(format, args, overlay, target, options)
