"""The compiler's public entry points: load + compose + validate + check, and lower to a Plan."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from specml.compiler.check import check_spec
from specml.compiler.compose import Composed, compose, load_overlays
from specml.compiler.errors import Diagnostic, SpecValidationError
from specml.compiler.load import SourceDoc, load_file, load_text
from specml.compiler.secret_scan import scan_secrets
from specml.compiler.spec import MLSystem
from specml.compiler.validate import salvage, validate_document

if TYPE_CHECKING:  # the IR is built only when lowering: `specml validate` never pays for it
    from specml.compiler.ir import Plan


@dataclass
class ValidatedSpec:
    """A spec that passed every check, with its warnings and where each value came from."""

    spec: MLSystem
    composed: Composed
    path: Path | None
    warnings: list[Diagnostic] = field(default_factory=list)

    def composed_yaml(self) -> str:
        """The spec as validated (overlays and overrides applied), as YAML, with a header naming
        its layers: what a run logs as its spec (the source file alone would not say it all)."""
        import yaml

        header = "".join(f"# layer: {layer}\n" for layer in self.composed.layers)
        body = yaml.safe_dump(self.composed.data, sort_keys=False, allow_unicode=True)
        return header + body


def validate_doc(
    doc: SourceDoc,
    overlays: Sequence[SourceDoc] = (),
    overrides: Sequence[str] = (),
    path: Path | None = None,
) -> ValidatedSpec:
    """Compose, validate and check an already-loaded document; raise SpecValidationError."""
    composed = compose(doc, overlays, overrides)
    secrets = scan_secrets(composed)
    spec, problems = validate_document(composed)
    problems = [*secrets, *problems]
    checked = spec
    if spec is None:
        checked, more = salvage(composed, problems)
        problems += more
    if checked is not None:  # semantic checks on everything that validated: all problems at once
        problems += check_spec(checked, composed)
    errors = [d for d in problems if d.severity == "error"]
    if errors or spec is None:
        raise SpecValidationError(problems)
    return ValidatedSpec(spec=spec, composed=composed, path=path, warnings=problems)


def validate_file(
    path: str | Path, overlays: Sequence[str] = (), overrides: Sequence[str] = ()
) -> ValidatedSpec:
    """Load a spec file (plus overlays and overrides) and validate it completely."""
    p = Path(path)
    doc = load_file(p)
    return validate_doc(doc, load_overlays(p, overlays), overrides, path=p)


def validate_text(text: str, file: str = "<spec>", overrides: Sequence[str] = ()) -> ValidatedSpec:
    """Validate spec text (for editors, tests and fuzzing)."""
    return validate_doc(load_text(text, file), (), overrides)


def plan_file(
    path: str | Path, overlays: Sequence[str] = (), overrides: Sequence[str] = ()
) -> Plan:
    """Validate a spec file and lower it to the Plan."""
    from specml.compiler.lower import lower

    return lower(validate_file(path, overlays, overrides).spec)


def check_data(validated: ValidatedSpec, *, require_sources: bool = True) -> list[Diagnostic]:
    """`validate --data`: every column the spec names against its source's schema (never a full
    scan), problems at the spec's FILE:LINE:COL. `require_sources=False` (for `plan`) checks only
    the sources that exist."""
    from specml.compiler.data_contract import check_data as check

    base = validated.path.parent if validated.path is not None else Path.cwd()
    return check(validated.spec, validated.composed, base, require_sources=require_sources)


def locate_diagnostics(items: Sequence[Diagnostic], validated: ValidatedSpec) -> list[Diagnostic]:
    """Give diagnostics that carry only a YAML path (row-level data errors found at apply) the
    FILE:LINE:COL of that path in the validated spec, overlays and overrides included."""
    out = []
    for d in items:
        if d.line is not None or not d.path:
            out.append(d)
            continue
        file, pos = validated.composed.locate(tuple(d.path), key=True)
        line, col = pos if pos else (None, None)
        out.append(replace(d, file=file, line=line, col=col))
    return out
