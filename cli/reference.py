"""`specml schema`, `docs`, `explain`, `targets` and `version`: what the spec and specml offer."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from specml.cli.common import EXIT_INVALID, EXIT_OK, Command, Format, FormatOpt, usage_error
from specml.compiler.errors import SpecError


def _write_or_check(cmd: Command, files: dict[Path, str], check: bool, regenerate: str) -> int:
    """Write generated files, or with `check` fail (exit 1) when a committed one is stale."""
    if check:
        stale = [p for p, text in files.items() if not p.exists() or p.read_text() != text]
        if stale:
            cmd.fail(
                EXIT_INVALID,
                f"stale: {', '.join(map(str, stale))}",
                hint=f"run `{regenerate}` and commit the result",
            )
        for path in files:
            cmd.reporter.ok(f"{path} is up to date", path=str(path))
        return EXIT_OK
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        cmd.reporter.ok(f"wrote {path}", path=str(path))
    return EXIT_OK


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
    format: FormatOpt = Format.human,
) -> None:
    """Write the JSON Schemas generated from the spec models (spec + overlay), for editors and CI."""
    cmd = Command(format.value)

    def body() -> int:
        from specml.compiler.schema import schema_files, schema_text

        if stdout:
            cmd.reporter.raw(schema_text())
            return EXIT_OK
        files = {output_dir / path.name: text for path, text in schema_files().items()}
        return _write_or_check(cmd, files, check, "specml schema")

    cmd.run(body)


def docs(
    output: Annotated[Path, typer.Option("--output", "-o", help="Reference file to write.")] = Path(
        "docs/reference.md"
    ),
    check: Annotated[bool, typer.Option("--check", help="Exit 1 if OUTPUT is stale.")] = False,
    format: FormatOpt = Format.human,
) -> None:
    """Write the spec reference (every field, generated from the models) to docs/reference.md."""
    cmd = Command(format.value)

    def body() -> int:
        from specml.compiler.docs import reference_markdown

        return _write_or_check(cmd, {output: reference_markdown()}, check, "specml docs")

    cmd.run(body)


def explain(
    path: Annotated[
        str, typer.Argument(help="A YAML path, e.g. rollout.steps or training.hyperparameters.lr.")
    ],
    format: FormatOpt = Format.human,
) -> None:
    """Explain a spec field: type, default, description and examples (from the models)."""
    cmd = Command(format.value)

    def body() -> int:
        from specml.cli.authoring import explain_json, explain_text

        try:
            text = explain_json(path) if format is Format.json else explain_text(path)
        except SpecError as exc:
            first = exc.diagnostics[0]
            raise usage_error(first.message, first.hint) from None
        cmd.reporter.raw(text)
        return EXIT_OK

    cmd.run(body)


_PROBE = {"local": "torch", "kubeflow": "kfp", "sagemaker": "pulumi_aws"}


def targets(format: FormatOpt = Format.human) -> None:
    """List the targets and whether their extra is installed."""
    import importlib.util

    from specml.targets import REGISTRY

    rows = []
    for name, (_, _, extra) in sorted(REGISTRY.items()):
        installed = importlib.util.find_spec(_PROBE.get(name, "json")) is not None
        rows.append(
            {"name": name, "installed": installed, "install": f"pip install specml[{extra}]"}
        )
    if format is Format.json:
        sys.stdout.write(json.dumps({"targets": rows}, indent=2) + "\n")
        return
    for row in rows:
        state = "installed" if row["installed"] else f"missing: {row['install']}"
        typer.echo(f"{row['name']:10s} {state}")


def version(format: FormatOpt = Format.human) -> None:
    """Print the specml version."""
    from importlib.metadata import version as pkg_version

    number = pkg_version("specml")
    if format is Format.json:
        sys.stdout.write(json.dumps({"version": number}) + "\n")
    else:
        typer.echo(number)


def register(app: typer.Typer) -> None:
    """Add these commands to the main app."""
    for command in (schema, docs, explain, targets, version):
        app.command()(command)
