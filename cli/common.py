"""What every `specml` command shares: exit codes, options, loading a spec, the error guard, and
reaching a target through its interface (`Target`, `OperableTarget`)."""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from specml.cli.output import Reporter
from specml.compiler.errors import Diagnostic, SpecError, TargetError

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_FAILED, EXIT_INTERNAL = 0, 1, 2, 3, 4


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
SpecArgs = Annotated[
    list[str], typer.Argument(help="Spec file, then optional key=value overrides.")
]


def split_args(args: Sequence[str]) -> tuple[list[Path], list[str]]:
    """Positional arguments are spec files, or Hydra-style overrides (`key=value`, `~key`)."""
    specs: list[Path] = []
    overrides: list[str] = []
    for arg in args:
        if ("=" in arg or arg.startswith("~")) and not Path(arg).exists():
            overrides.append(arg)
        else:
            specs.append(Path(arg))
    return specs, overrides


def usage_error(message: str, hint: str | None = None) -> TargetError:
    """A usage mistake (exit 2)."""
    return TargetError([Diagnostic(message, hint=hint, stage="usage", code="usage")])


def parse_endpoints(items: list[str]) -> dict[str, str]:
    """`--endpoint ROLE=URL` flags as a mapping (a usage error when one is malformed)."""
    out: dict[str, str] = {}
    for item in items:
        role, sep, url = item.partition("=")
        if not sep or not role or not url:
            raise usage_error(
                f"--endpoint {item!r} is not ROLE=URL", hint="e.g. --endpoint pipelines=http://..."
            )
        out[role] = url
    return out


def exit_code_for(exc: SpecError) -> int:
    """1 invalid spec, 2 usage, 3 a target/apply failure."""
    from specml.compiler.errors import LoadError, SpecValidationError

    if isinstance(exc, LoadError | SpecValidationError):
        return EXIT_INVALID
    if any(d.code in ("unknown_target", "usage") for d in exc.diagnostics):
        return EXIT_USAGE
    if isinstance(exc, TargetError):
        return EXIT_FAILED
    return EXIT_INVALID


@dataclass
class Command:
    """One command invocation: its reporter and, once loaded, the validated spec (so that every
    later error, from a target, a gate or the data, is shown at the spec's FILE:LINE:COL)."""

    fmt: str = "human"
    reporter: Reporter = field(init=False)
    validated: Any = None
    spec: Path | None = None
    checked: list[Diagnostic] = field(default_factory=list)  # the target's check, as found

    def __post_init__(self) -> None:
        self.reporter = Reporter(str(self.fmt))

    def fail(self, code: int, message: str, hint: str | None = None) -> NoReturn:
        """Report one usage problem and exit with `code`."""
        self.reporter.diagnostics(usage_error(message, hint).diagnostics)
        self.reporter.flush()
        raise typer.Exit(code)

    def one_spec(self, args: Sequence[str]) -> tuple[Path, list[str]]:
        """Exactly one spec file, then overrides."""
        specs, overrides = split_args(args)
        if len(specs) != 1:
            raise usage_error(
                f"expected exactly one spec file, got {len(specs)}",
                hint="usage: specml COMMAND SPEC [key=value ...]",
            )
        return specs[0], overrides

    def load(self, args: Sequence[str], overlays: Sequence[str] | None = None) -> Any:
        """Validate the one spec in `args` (warnings reported once) and lower it to the Plan."""
        from specml.compiler.api import validate_file
        from specml.compiler.lower import lower

        spec, overrides = self.one_spec(args)
        self.spec = spec
        self.validated = validate_file(spec, overlays or [], overrides)
        self.reporter.diagnostics(self.validated.warnings)
        return lower(self.validated.spec)

    @property
    def base_dir(self) -> Path:
        """The spec's folder: relative paths in the spec (sources, workdir) start here."""
        assert self.spec is not None
        return self.spec.parent.resolve()

    def locate(self, items: Sequence[Diagnostic]) -> list[Diagnostic]:
        """Diagnostics that name only a YAML path get the spec's FILE:LINE:COL."""
        if self.validated is None:
            return list(items)
        from specml.compiler.api import locate_diagnostics

        return locate_diagnostics(items, self.validated)

    def target_check(self, target: Any, plan: Any) -> bool:
        """Report what the target cannot do for this Plan; True when nothing blocks it."""
        self.checked = list(target.check(plan))
        issues = self.locate(self.checked)
        self.reporter.diagnostics(issues)
        return not any(d.severity == "error" for d in issues)

    def run(self, body: Callable[[], int]) -> NoReturn:
        """Run a command body; user errors become located diagnostics and exit codes."""
        reporter = self.reporter
        try:
            with library_output_to_stderr():
                code = body()
        except SpecError as exc:
            reporter.diagnostics(self.locate(exc.diagnostics))
            code = exit_code_for(exc)
        except typer.Exit:
            reporter.flush()
            raise
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
                        hint="this is a specml bug; rerun with SPECML_DEBUG=1 for the traceback "
                        "and report it",
                        stage="target",
                        code="internal",
                    )
                ]
            )
            code = EXIT_INTERNAL
        reporter.flush()
        raise typer.Exit(code)


def operable(name: str) -> Any:
    """The named target as an `OperableTarget`, or a usage error saying what to do instead."""
    from specml.targets import get_target
    from specml.targets.base import OperableTarget

    target = get_target(name)
    if not isinstance(target, OperableTarget):
        raise usage_error(
            f"target '{name}' compiles a system but does not run it here",
            hint=f"use `specml compile SPEC --target {name} -o DIR` and deploy its output",
        )
    return target


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class _PlainText(io.TextIOBase):
    """A text stream that drops ANSI colour codes on the way to `target` (not a terminal)."""

    def __init__(self, target: Any) -> None:
        self.target = target

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.target.write(_ANSI.sub("", text))
        return len(text)

    def flush(self) -> None:
        self.target.flush()

    def fileno(self) -> int:
        return int(self.target.fileno())

    def isatty(self) -> bool:
        return False

    @property
    def buffer(self) -> Any:
        """Bytes written here go to the target's buffer as they are."""
        return self.target.buffer


@contextlib.contextmanager
def library_output_to_stderr() -> Iterator[None]:
    """Libraries that print (Feast's "Materializing ..." banner, progress bars) print to stderr,
    so that stdout holds only what the command reports (`--format json` parses); their colour
    codes are dropped unless stderr is a terminal."""
    err = sys.stderr
    with contextlib.redirect_stdout(err if err.isatty() else _PlainText(err)):
        yield


def quiet_libraries() -> None:
    """No MLflow INFO lines, no progress bars unless stderr is a terminal, no Feast telemetry."""
    import logging

    os.environ.setdefault("FEAST_USAGE", "False")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    if not sys.stderr.isatty():
        os.environ.setdefault("TQDM_DISABLE", "1")
    for name in ("mlflow", "alembic", "feast", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)
