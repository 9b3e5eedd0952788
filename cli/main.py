"""The `specml` command line: thin shells over the compiler and the targets.

Exit codes: 0 ok, 1 spec invalid, 2 usage, 3 apply/gate failed, 4 internal error. The commands
live by topic: this module (validate, plan, compile), operate.py (apply, serve, runs),
starter.py (init, demo-data), reference.py (schema, docs, explain, targets, version), rollout.py
and monitor.py; what they share is in common.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from specml.cli.common import (
    EXIT_INVALID,
    EXIT_OK,
    EXIT_USAGE,
    Command,
    Format,
    FormatOpt,
    OverlayOpt,
    SpecArgs,
    TargetOpt,
    quiet_libraries,
    split_args,
)
from specml.compiler.errors import Diagnostic, SpecError

app = typer.Typer(
    name="specml",
    help="Validate, plan, compile and apply declarative ML-system specs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.callback()
def _quiet() -> None:
    """Validate, plan, compile and apply declarative ML-system specs."""
    quiet_libraries()


@app.command()
def validate(
    args: Annotated[
        list[str], typer.Argument(help="Spec files, then optional key=value overrides.")
    ],
    overlay: OverlayOpt = None,
    format: FormatOpt = Format.human,
    data: Annotated[
        bool,
        typer.Option(
            "--data", help="Also check every column the spec names against its sources' schemas."
        ),
    ] = False,
) -> None:
    """Validate one or more specs: every problem with FILE:LINE:COL, YAML path and a hint."""
    cmd = Command(format.value)
    reporter = cmd.reporter

    def body() -> int:
        from specml.compiler.api import check_data, validate_file

        specs, overrides = split_args(args)
        if not specs:
            cmd.fail(EXIT_USAGE, "no spec file given", hint="specml validate specs/churn.yaml")
        problems: list[Diagnostic] = []
        invalid = 0
        for spec in specs:
            try:
                result = validate_file(spec, overlay or [], overrides)
                problems += result.warnings
                found = check_data(result) if data else []
                problems += found
                if any(d.severity == "error" for d in found):
                    invalid += 1
                    continue
                reporter.ok(f"{spec}: valid", path=str(spec))
            except SpecError as exc:
                invalid += 1
                problems += exc.diagnostics
        reporter.diagnostics(problems)
        reporter.summary(specs=len(specs), invalid=invalid, problems=problems)
        return EXIT_INVALID if invalid else EXIT_OK

    cmd.run(body)


@app.command()
def plan(
    args: SpecArgs,
    target: Annotated[
        str | None, typer.Option("--target", "-t", help="Show what this target would change.")
    ] = None,
    overlay: OverlayOpt = None,
    against: Annotated[
        Path | None,
        typer.Option(
            "--against", "-o", help="Compare with the Plan `specml compile -o DIR` recorded."
        ),
    ] = None,
    format: FormatOpt = Format.human,
) -> None:
    """Print the Plan (the IR), or with --target a diff of what applying/compiling would change."""
    cmd = Command(format.value)
    reporter = cmd.reporter

    def body() -> int:
        from specml.compiler.api import check_data

        the_plan = cmd.load(args, overlay)
        contract = check_data(cmd.validated, require_sources=False)  # the sources that exist
        reporter.diagnostics(contract)
        if any(d.severity == "error" for d in contract):
            return EXIT_INVALID
        if target is None:
            if format is Format.json:
                reporter.raw(the_plan.to_json())
            else:
                reporter.plan_summary(the_plan)
            return EXIT_OK
        from specml.cli.authoring import show_plan_diff
        from specml.targets import get_target

        tgt = get_target(target)
        usable = cmd.target_check(tgt, the_plan)
        show_plan_diff(reporter, tgt, the_plan, cmd.base_dir, against)
        return EXIT_OK if usable else EXIT_INVALID

    cmd.run(body)


@app.command(name="compile")
def compile_(
    args: SpecArgs,
    target: TargetOpt,
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder.")],
    check: Annotated[
        bool, typer.Option("--check", help="Exit 1 if OUTPUT differs from a fresh compile.")
    ] = False,
    overlay: OverlayOpt = None,
    format: FormatOpt = Format.human,
) -> None:
    """Compile the spec for a target into OUTPUT (deterministic: same input, same bytes)."""
    cmd = Command(format.value)
    reporter = cmd.reporter

    def body() -> int:
        from specml.cli.compiled import compare_trees, emit_into
        from specml.targets import get_target

        the_plan = cmd.load(args, overlay)
        tgt = get_target(target)
        if not cmd.target_check(tgt, the_plan):
            return EXIT_INVALID
        if not check:
            # a target's notes that repeat its check's warnings were reported already
            repeated = {d.render() for d in cmd.checked}
            reporter.emitted(target, emit_into(tgt, the_plan, output), repeated)
            return EXIT_OK
        differences = compare_trees(tgt, the_plan, output)
        if not differences:
            reporter.ok(f"{output} is up to date for target {target}")
            return EXIT_OK
        reporter.diagnostics(
            [
                Diagnostic(
                    f"compiled output is out of date: {d}",
                    file=str(output / d.split(" ")[0]),
                    hint=f"run `specml compile {cmd.spec} --target {target} -o {output}` and "
                    "commit",
                    stage="target",
                    code="stale",
                )
                for d in differences
            ]
        )
        return EXIT_INVALID

    cmd.run(body)


def _register() -> None:
    """Commands by topic, from their own modules (imports there stay cheap: validate starts fast)."""
    from specml.cli import monitor, operate, reference, starter
    from specml.cli.rollout import rollout_app

    for module in (operate, starter, reference, monitor):
        module.register(app)
    app.add_typer(rollout_app, name="rollout")


_register()


def main() -> None:
    """Console entry point."""
    try:
        app()
    except SystemExit as exc:
        # click uses 2 for usage errors already; keep that contract
        raise SystemExit(exc.code) from None


if __name__ == "__main__":  # pragma: no cover
    main()
