"""`specml init` (a starter spec) and `specml demo-data` (synthetic data for a spec's sources).

Both write files, so both follow one rule: only inside the spec's folder or a folder the user names
with an explicit flag, and never over a file specml did not create (demo-data keeps a record of
what it wrote, with each file's hash, in the workdir).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from specml.cli.common import (
    EXIT_OK,
    Command,
    Format,
    FormatOpt,
    OverlayOpt,
    SpecArgs,
    usage_error,
)
from specml.compiler.errors import Diagnostic, TargetError

DEMO_RECORD = "demo_data.json"


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
    format: FormatOpt = Format.human,
) -> None:
    """Write a commented starter spec for a task (it validates as written)."""
    cmd = Command(format.value)

    def body() -> int:
        from specml.cli.authoring import write_starter

        text = write_starter(task, output, force)
        if output is None and format is Format.json:
            cmd.reporter.document.update(task=task, spec=text)
        elif output is None:
            cmd.reporter.raw(text)
        else:
            cmd.reporter.ok(f"wrote {output}; next: specml validate {output}", path=str(output))
        return EXIT_OK

    cmd.run(body)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_record(path: Path) -> dict[str, str]:
    """What demo-data wrote before (file -> sha256); a damaged record is the user's to remove."""
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text())
        if isinstance(record, dict):
            return record
        problem = "it is not a JSON object"
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        problem = str(exc)
    raise TargetError(
        [
            Diagnostic(
                f"the demo-data record cannot be read: {problem}",
                file=str(path),
                hint="delete it: demo-data then leaves every existing source file alone",
                stage="usage",
                code="usage",
            )
        ]
    )


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def demo_targets(
    plan: Any, base_dir: Path, record: dict[str, str], allowed: list[Path]
) -> list[Diagnostic]:
    """Why each source file may not be written: outside the allowed folders, or not ours."""
    from specml.runtime.steps.common import source_path

    problems = []
    for source in plan.features.sources:
        path = source_path(source, base_dir).resolve()
        where = ("data", "sources", source.id, "path")
        if not any(_inside(path, folder) for folder in [base_dir, *allowed]):
            problems.append(
                Diagnostic(
                    f"demo data for source '{source.id}' would be written to {path}, outside "
                    f"the spec's folder {base_dir}",
                    path=where,
                    stage="usage",
                    code="usage",
                    hint=f"pass --allow-write {path.parent} to write there",
                )
            )
        elif path.exists() and record.get(str(path)) != _sha256(path):
            problems.append(
                Diagnostic(
                    f"{path} exists and was not written by `specml demo-data` (or was changed "
                    "since): it is left alone",
                    path=where,
                    stage="usage",
                    code="usage",
                    hint="move it away, or point the source's path at a new file",
                )
            )
    return problems


def demo_data(
    args: SpecArgs,
    rows: Annotated[int, typer.Option(help="Rows per entity source.")] = 5000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    allow_write: Annotated[
        list[Path] | None,
        typer.Option("--allow-write", help="Also write under this folder (outside the spec's)."),
    ] = None,
    overlay: OverlayOpt = None,
    format: FormatOpt = Format.human,
) -> None:
    """Write deterministic, realistic demo data for a spec's sources (no network)."""
    cmd = Command(format.value)

    def body() -> int:
        from specml.runtime.demo_data import write_demo_data
        from specml.runtime.files import write_json_atomic
        from specml.runtime.layout import Workdir

        the_plan = cmd.load(args, overlay)
        if rows < 1:
            raise usage_error("--rows must be at least 1", hint="e.g. --rows 5000")
        base = cmd.base_dir
        record_path = Workdir(base / the_plan.targets.local.workdir).root / DEMO_RECORD
        record = _read_record(record_path)
        problems = demo_targets(the_plan, base, record, list(allow_write or []))
        if problems:
            raise TargetError(problems)
        written = write_demo_data(the_plan, base_dir=base, rows=rows, seed=seed)
        for path in written:
            record[str(Path(path).resolve())] = _sha256(Path(path))
            cmd.reporter.ok(f"wrote {path}", path=str(path))
        write_json_atomic(record_path, record)
        return EXIT_OK

    cmd.run(body)


def register(app: typer.Typer) -> None:
    """Add these commands to the main app."""
    app.command()(init)
    app.command(name="demo-data")(demo_data)
