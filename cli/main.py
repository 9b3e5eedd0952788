"""The `specml` command line: thin shells over the compiler and the targets.

Exit codes: 0 ok, 1 spec invalid, 2 usage, 3 apply/gate failed, 4 internal error.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from specml.cli.output import Reporter
from specml.compiler.errors import Diagnostic, SpecError, TargetError

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_FAILED, EXIT_INTERNAL = 0, 1, 2, 3, 4

app = typer.Typer(
    name="specml",
    help="Validate, plan, compile and apply declarative ML-system specs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _register_operations() -> None:
    """Rollout and monitoring commands live in their own modules (cheap imports only)."""
    from specml.cli.monitor import register as register_monitor
    from specml.cli.rollout import rollout_app

    app.add_typer(rollout_app, name="rollout")
    register_monitor(app)


class Format(StrEnum):
    human = "human"
    json = "json"
    github = "github"


FormatOpt = Annotated[
    Format, typer.Option("--format", "-f", help="human (default), json for CI, github annotations.")
]
OverlayOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--overlay", "-O", help="Overlay to merge (a path, or NAME for overlays/NAME.yaml)."
    ),
]
TargetOpt = Annotated[
    str, typer.Option("--target", "-t", help="Target: local, kubeflow, sagemaker.")
]


def _split_args(args: Sequence[str]) -> tuple[list[Path], list[str]]:
    """Positional arguments are spec files, or Hydra-style overrides (`key=value`, `~key`)."""
    specs: list[Path] = []
    overrides: list[str] = []
    for arg in args:
        looks_like_override = ("=" in arg or arg.startswith("~")) and not Path(arg).exists()
        (overrides if looks_like_override else specs).append(
            arg if looks_like_override else Path(arg)
        )  # type: ignore[arg-type]
    return specs, overrides


def _fail(reporter: Reporter, code: int, message: str, hint: str | None = None) -> NoReturn:
    reporter.diagnostics([Diagnostic(message, hint=hint, stage="usage", code="usage")])
    raise typer.Exit(code)


def _guard(reporter: Reporter, body: Callable[[], int]) -> NoReturn:
    """Run a command body; user errors become diagnostics and exit codes, never tracebacks."""
    try:
        code = body()
    except SpecError as exc:
        reporter.diagnostics(exc.diagnostics)
        code = _exit_code_for(exc)
    except typer.Exit as exc:
        reporter.flush()
        raise exc
    except KeyboardInterrupt:
        reporter.note("interrupted")
        code = 130
    except Exception as exc:  # an internal bug: say so plainly, trace only on request
        if os.environ.get("SPECML_DEBUG"):
            raise
        reporter.diagnostics(
            [
                Diagnostic(
                    f"internal error: {type(exc).__name__}: {exc}",
                    hint="this is a specml bug; rerun with SPECML_DEBUG=1 for the traceback and report it",
                    stage="target",
                    code="internal",
                )
            ]
        )
        code = EXIT_INTERNAL
    reporter.flush()
    raise typer.Exit(code)


def _exit_code_for(exc: SpecError) -> int:
    from specml.compiler.errors import LoadError, SpecValidationError

    if isinstance(exc, LoadError | SpecValidationError):
        return EXIT_INVALID
    if any(d.code in ("unknown_target", "usage") for d in exc.diagnostics):
        return EXIT_USAGE
    if isinstance(exc, TargetError):
        return EXIT_FAILED
    return EXIT_INVALID


def _load_plan(
    spec: Path, overlays: Sequence[str], overrides: Sequence[str], reporter: Reporter
) -> Any:
    return _load_validated(spec, overlays, overrides, reporter)[0]


def _load_validated(
    spec: Path, overlays: Sequence[str], overrides: Sequence[str], reporter: Reporter
) -> tuple[Any, Any]:
    """(Plan, ValidatedSpec): for commands that also record the composed spec."""
    from specml.compiler.api import validate_file
    from specml.compiler.lower import lower

    validated = validate_file(spec, overlays, overrides)
    if validated.warnings:
        reporter.diagnostics(validated.warnings)
    return lower(validated.spec), validated


def _one_spec(args: Sequence[str], reporter: Reporter) -> tuple[Path, list[str]]:
    specs, overrides = _split_args(args)
    if len(specs) != 1:
        _fail(
            reporter,
            EXIT_USAGE,
            f"expected exactly one spec file, got {len(specs)}",
            hint="usage: specml COMMAND SPEC [key=value ...]",
        )
    return specs[0], overrides


@app.command()
def validate(
    args: Annotated[
        list[str], typer.Argument(help="Spec files, then optional key=value overrides.")
    ],
    overlay: OverlayOpt = None,
    format: FormatOpt = Format.human,
) -> None:
    """Validate one or more specs: every problem with FILE:LINE:COL, YAML path and a hint."""
    reporter = Reporter(format.value)

    def body() -> int:
        from specml.compiler.api import validate_file

        specs, overrides = _split_args(args)
        if not specs:
            _fail(
                reporter, EXIT_USAGE, "no spec file given", hint="specml validate specs/churn.yaml"
            )
        problems: list[Diagnostic] = []
        invalid = 0
        for spec in specs:
            try:
                result = validate_file(spec, overlay or [], overrides)
                problems += result.warnings
                reporter.ok(f"{spec}: valid", path=str(spec))
            except SpecError as exc:
                invalid += 1
                problems += exc.diagnostics
        reporter.diagnostics(problems)
        reporter.summary(specs=len(specs), invalid=invalid, problems=problems)
        return EXIT_INVALID if invalid else EXIT_OK

    _guard(reporter, body)


@app.command()
def schema(
    output_dir: Annotated[
        Path, typer.Option("--output-dir", "-o", help="Folder for the schema files.")
    ] = Path("schemas"),
    check: Annotated[
        bool, typer.Option("--check", help="Exit 1 if a committed schema file is stale.")
    ] = False,
    stdout: Annotated[
        bool, typer.Option("--stdout", help="Print the spec schema instead of writing.")
    ] = False,
) -> None:
    """Write the JSON Schemas generated from the spec models (spec + overlay), for editors and CI."""
    reporter = Reporter("human")
    from specml.compiler.schema import schema_files, schema_text

    if stdout:
        sys.stdout.write(schema_text())
        raise typer.Exit(EXIT_OK)
    files = {output_dir / path.name: text for path, text in schema_files().items()}
    if check:
        stale = [p for p, text in files.items() if not p.exists() or p.read_text() != text]
        if stale:
            _fail(
                reporter,
                EXIT_INVALID,
                f"stale: {', '.join(map(str, stale))}",
                hint="run `specml schema` and commit the result",
            )
        reporter.ok(f"{output_dir} is up to date")
        raise typer.Exit(EXIT_OK)
    output_dir.mkdir(parents=True, exist_ok=True)
    for path, text in files.items():
        path.write_text(text)
        reporter.ok(f"wrote {path}")


@app.command()
def plan(
    args: Annotated[
        list[str], typer.Argument(help="Spec file, then optional key=value overrides.")
    ],
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
    reporter = Reporter(format.value)

    def body() -> int:
        spec, overrides = _one_spec(args, reporter)
        the_plan = _load_plan(spec, overlay or [], overrides, reporter)
        if target is None:
            if format is Format.json:
                reporter.raw(the_plan.to_json())
            else:
                reporter.plan_summary(the_plan)
            return EXIT_OK
        from specml.targets import get_target

        tgt = get_target(target)
        from specml.cli.authoring import locate_in_spec, show_plan_diff

        issues = locate_in_spec(tgt.check(the_plan), spec)
        reporter.diagnostics(issues)

        show_plan_diff(reporter, target, the_plan, spec.parent, against)
        return EXIT_INVALID if any(d.severity == "error" for d in issues) else EXIT_OK

    _guard(reporter, body)


@app.command(name="compile")
def compile_(
    args: Annotated[
        list[str], typer.Argument(help="Spec file, then optional key=value overrides.")
    ],
    target: TargetOpt,
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder.")],
    check: Annotated[
        bool, typer.Option("--check", help="Exit 1 if OUTPUT differs from a fresh compile.")
    ] = False,
    overlay: OverlayOpt = None,
    format: FormatOpt = Format.human,
) -> None:
    """Compile the spec for a target into OUTPUT (deterministic: same input, same bytes)."""
    reporter = Reporter(format.value)

    def body() -> int:
        from specml.cli.compiled import compare_trees, emit_into
        from specml.targets import get_target

        spec, overrides = _one_spec(args, reporter)
        the_plan = _load_plan(spec, overlay or [], overrides, reporter)
        tgt = get_target(target)
        from specml.cli.authoring import locate_in_spec

        issues = locate_in_spec(tgt.check(the_plan), spec)
        reporter.diagnostics(issues)
        if any(d.severity == "error" for d in issues):
            return EXIT_INVALID
        if check:
            differences = compare_trees(tgt, the_plan, output)
            if differences:
                reporter.diagnostics(
                    [
                        Diagnostic(
                            f"compiled output is out of date: {d}",
                            file=str(output / d.split(" ")[0]),
                            hint=f"run `specml compile {spec} --target {target} -o {output}` and commit",
                            stage="target",
                            code="stale",
                        )
                        for d in differences
                    ]
                )
                return EXIT_INVALID
            reporter.ok(f"{output} is up to date for target {target}")
            return EXIT_OK
        result = emit_into(tgt, the_plan, output)
        reporter.emitted(target, result)
        return EXIT_OK

    _guard(reporter, body)


@app.command()
def apply(
    args: Annotated[
        list[str], typer.Argument(help="Spec file, then optional key=value overrides.")
    ],
    target: TargetOpt = "local",
    overlay: OverlayOpt = None,
    serve: Annotated[
        bool, typer.Option("--serve", help="Start the server after a successful apply.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Retrain even if nothing changed.")
    ] = False,
    format: FormatOpt = Format.human,
) -> None:
    """Apply the spec: run the whole lifecycle (local target: features, training, registry, ONNX)."""
    reporter = Reporter(format.value)

    def body() -> int:
        from specml.targets import get_target

        spec, overrides = _one_spec(args, reporter)
        the_plan, validated = _load_validated(spec, overlay or [], overrides, reporter)
        tgt = get_target(target)
        apply_fn = getattr(tgt, "apply", None)
        if apply_fn is None:
            _fail(
                reporter,
                EXIT_USAGE,
                f"target '{target}' has no apply",
                hint=f"use `specml compile --target {target}` and deploy its output",
            )
        issues = tgt.check(the_plan)
        reporter.diagnostics(issues)
        if any(d.severity == "error" for d in issues):
            return EXIT_INVALID
        options_cls = getattr(sys.modules[type(tgt).__module__], "ApplyOptions", None)
        # the CLI serves after reporting (not ApplyOptions.serve) so the summary prints once
        wanted = {"force": force, "spec_yaml": validated.composed_yaml()}
        known = getattr(options_cls, "__dataclass_fields__", wanted)
        options = (
            options_cls(**{k: v for k, v in wanted.items() if k in known}) if options_cls else None
        )
        result = apply_fn(the_plan, base_dir=spec.parent.resolve(), options=options)
        reporter.applied(target, result)
        if serve:
            serve_fn = getattr(tgt, "serve", None)
            if serve_fn is None:
                _fail(reporter, EXIT_USAGE, f"target '{target}' cannot serve locally")
            reporter.flush()
            local = the_plan.targets.local
            serve_fn(the_plan, base_dir=spec.parent.resolve(), host=local.host, port=local.port)
        return EXIT_OK

    _guard(reporter, body)


@app.command()
def serve(
    args: Annotated[
        list[str], typer.Argument(help="Spec file, then optional key=value overrides.")
    ],
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
) -> None:
    """Serve the champion model over the Open Inference Protocol (KServe v2) with /metrics."""
    reporter = Reporter("human")

    def body() -> int:
        from specml.targets import get_target

        spec, overrides = _one_spec(args, reporter)
        the_plan = _load_plan(spec, overlay or [], overrides, reporter)
        tgt: Any = get_target("local")
        local = the_plan.targets.local
        tgt.serve(
            the_plan,
            base_dir=spec.parent.resolve(),
            host=host or local.host,
            port=port or local.port,
            model_dir=model_dir,
            features_as_of=features_as_of,
        )
        return EXIT_OK

    _guard(reporter, body)


@app.command()
def runs(
    args: Annotated[
        list[str], typer.Argument(help="Spec file, then optional key=value overrides.")
    ],
    limit: Annotated[int, typer.Option(help="Show at most this many runs.")] = 20,
    overlay: OverlayOpt = None,
    format: FormatOpt = Format.human,
) -> None:
    """List the local target's applies (newest first): status, model version, metrics, time."""
    reporter = Reporter(format.value)

    def body() -> int:
        from specml.targets.local.state import load_state, workdir

        spec, overrides = _one_spec(args, reporter)
        the_plan = _load_plan(spec, overlay or [], overrides, reporter)
        state = load_state(workdir(the_plan, spec.parent.resolve())) or {}
        records = list(reversed(state.get("runs", [])))[: max(limit, 0)]
        reporter.runs(the_plan.system.name, records, state.get("aliases", {}))
        return EXIT_OK

    _guard(reporter, body)


@app.command(name="demo-data")
def demo_data(
    args: Annotated[
        list[str], typer.Argument(help="Spec file, then optional key=value overrides.")
    ],
    rows: Annotated[int, typer.Option(help="Rows per entity source.")] = 5000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    overlay: OverlayOpt = None,
) -> None:
    """Write deterministic, realistic demo data for a spec's sources (no network)."""
    reporter = Reporter("human")

    def body() -> int:
        from specml.runtime.demo_data import write_demo_data

        spec, overrides = _one_spec(args, reporter)
        the_plan = _load_plan(spec, overlay or [], overrides, reporter)
        written = write_demo_data(the_plan, base_dir=spec.parent.resolve(), rows=rows, seed=seed)
        for path in written or []:
            reporter.ok(f"wrote {path}")
        return EXIT_OK

    _guard(reporter, body)


@app.command()
def init(
    task: Annotated[
        str,
        typer.Option(
            "--task", help="binary_classification | multiclass_classification | regression"
        ),
    ] = "binary_classification",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here (default: stdout).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite OUTPUT if it exists.")] = False,
) -> None:
    """Write a commented starter spec for a task (it validates as written)."""
    reporter = Reporter("human")

    def body() -> int:
        from specml.cli.authoring import write_starter

        text = write_starter(task, output, force)
        if output is None:
            sys.stdout.write(text)
        else:
            reporter.ok(f"wrote {output}; next: specml validate {output}")
        return EXIT_OK

    _guard(reporter, body)


@app.command()
def explain(
    path: Annotated[
        str, typer.Argument(help="A YAML path, e.g. rollout.steps or training.hyperparameters.lr.")
    ],
    format: FormatOpt = Format.human,
) -> None:
    """Explain a spec field: type, default, description and examples (from the models)."""
    reporter = Reporter("human")

    def body() -> int:
        from specml.cli.authoring import _usage, explain_json, explain_text

        try:
            sys.stdout.write(explain_json(path) if format is Format.json else explain_text(path))
        except SpecError as exc:
            raise _usage(exc.diagnostics[0].message, exc.diagnostics[0].hint) from None
        return EXIT_OK

    _guard(reporter, body)


@app.command()
def docs(
    output: Annotated[Path, typer.Option("--output", "-o", help="Reference file to write.")] = Path(
        "docs/reference.md"
    ),
    check: Annotated[bool, typer.Option("--check", help="Exit 1 if OUTPUT is stale.")] = False,
) -> None:
    """Write the spec reference (every field, generated from the models) to docs/reference.md."""
    reporter = Reporter("human")
    from specml.compiler.docs import reference_markdown

    text = reference_markdown()
    if check:
        if not output.exists() or output.read_text() != text:
            _fail(
                reporter,
                EXIT_INVALID,
                f"stale: {output}",
                hint="run `specml docs` and commit the result",
            )
        reporter.ok(f"{output} is up to date")
        raise typer.Exit(EXIT_OK)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    reporter.ok(f"wrote {output}")


@app.command()
def targets() -> None:
    """List the targets and whether their extra is installed."""
    import importlib.util

    from specml.targets import REGISTRY

    probe = {"local": "torch", "kubeflow": "kfp", "sagemaker": "pulumi_aws"}
    for name, (_, _, extra) in sorted(REGISTRY.items()):
        ok = importlib.util.find_spec(probe.get(name, "json")) is not None
        typer.echo(f"{name:10s} {'installed' if ok else f'missing: pip install specml[{extra}]'}")


@app.command()
def version() -> None:
    """Print the specml version."""
    from importlib.metadata import version as pkg_version

    typer.echo(pkg_version("specml"))


_register_operations()


def main() -> None:
    """Console entry point."""
    try:
        app()
    except SystemExit as exc:
        # click uses 2 for usage errors already; keep that contract
        raise SystemExit(exc.code) from None


if __name__ == "__main__":  # pragma: no cover
    main()
