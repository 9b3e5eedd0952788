"""`specml apply`, `serve` and `runs`: operating a system through its target's `OperableTarget`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from specml.cli.common import (
    EXIT_INVALID,
    EXIT_OK,
    Command,
    Format,
    FormatOpt,
    OverlayOpt,
    SpecArgs,
    TargetOpt,
    operable,
    parse_endpoints,
)


def apply(
    args: SpecArgs,
    target: TargetOpt = "local",
    overlay: OverlayOpt = None,
    serve: Annotated[
        bool, typer.Option("--serve", help="Start the server after a successful apply.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Retrain even if nothing changed.")
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Print every action and change nothing (cluster targets)."),
    ] = False,
    endpoint: Annotated[
        list[str] | None,
        typer.Option(
            "--endpoint",
            help="A service the target talks to, as ROLE=URL (kubeflow: pipelines=URL, "
            "kubernetes=URL); default: the environment, then the spec's target settings.",
        ),
    ] = None,
    format: FormatOpt = Format.human,
) -> None:
    """Apply the spec: run the whole lifecycle (local target: features, training, registry, ONNX)."""
    cmd = Command(format.value)

    def body() -> int:
        from specml.targets.base import ApplyOptions, ServeOptions

        the_plan = cmd.load(args, overlay)
        tgt = operable(target)
        if not cmd.target_check(tgt, the_plan):
            return EXIT_INVALID
        endpoints = parse_endpoints(endpoint or [])
        options = ApplyOptions(
            force=force,
            spec_yaml=cmd.validated.composed_yaml(),
            dry_run=dry_run,
            endpoints=endpoints,
        )
        result = tgt.apply(the_plan, cmd.base_dir, options)
        cmd.reporter.applied(target, result)
        if serve:  # served after reporting, so the summary prints once and JSON is complete
            cmd.reporter.flush()
            tgt.serve(the_plan, cmd.base_dir, ServeOptions())
        return EXIT_OK

    cmd.run(body)


def serve(
    args: SpecArgs,
    target: TargetOpt = "local",
    host: Annotated[str | None, typer.Option(help="Bind address (default from the spec).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default from the spec).")] = None,
    model_dir: Annotated[Path | None, typer.Option(help="Serve this model folder instead.")] = None,
    features_as_of: Annotated[
        str,
        typer.Option(
            "--features-as-of",
            help="Clock for feature TTLs in predict-by-entity: now (default), materialized "
            "(the last materialization: use it with demo data, which lies in the past) or an "
            "ISO time.",
        ),
    ] = "now",
    overlay: OverlayOpt = None,
    format: FormatOpt = Format.human,
) -> None:
    """Serve the champion model over the Open Inference Protocol (KServe v2) with /metrics."""
    cmd = Command(format.value)

    def body() -> int:
        from specml.targets.base import ServeOptions

        the_plan = cmd.load(args, overlay)
        options = ServeOptions(host, port, model_dir, features_as_of)
        operable(target).serve(the_plan, cmd.base_dir, options)
        return EXIT_OK

    cmd.run(body)


def runs(
    args: SpecArgs,
    target: TargetOpt = "local",
    limit: Annotated[int, typer.Option(help="Show at most this many runs.")] = 20,
    overlay: OverlayOpt = None,
    format: FormatOpt = Format.human,
) -> None:
    """List the target's applies (newest first): status, model version, metrics, time."""
    cmd = Command(format.value)

    def body() -> int:
        the_plan = cmd.load(args, overlay)
        history = operable(target).history(the_plan, cmd.base_dir)
        records = list(history.records)[: max(limit, 0)]
        cmd.reporter.runs(the_plan.system.name, records, history.aliases)
        return EXIT_OK

    cmd.run(body)


def register(app: typer.Typer) -> None:
    """Add these commands to the main app."""
    for command in (apply, serve, runs):
        app.command()(command)
