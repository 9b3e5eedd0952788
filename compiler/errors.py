"""One error family: every problem a user can cause is a Diagnostic; SpecError carries them all."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Severity = Literal["error", "warning"]
Stage = Literal["load", "compose", "validate", "check", "lower", "unsupported", "target", "usage"]

YamlPath = tuple[str | int, ...]


def has_child(node: Any, part: str | int) -> bool:
    """`node[part]` exists: a mapping key, or an in-range list index."""
    if isinstance(node, dict):
        return part in node
    return isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)


def format_path(path: Sequence[str | int]) -> str:
    """Render a YAML path the way users write it: `rollout.steps[1].traffic`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "<root>"


def did_you_mean(word: str, candidates: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The closest candidate to a misspelt word, or None when nothing is close."""
    names = sorted({str(c) for c in candidates})
    matches = difflib.get_close_matches(str(word), names, n=1, cutoff=cutoff)
    if not matches:
        lowered = {n.lower(): n for n in names}
        if str(word).lower() in lowered:
            return lowered[str(word).lower()]
        return None
    return matches[0]


@dataclass(frozen=True)
class Diagnostic:
    """One problem at one place in one file, with what to do about it."""

    message: str
    path: YamlPath = ()
    file: str | None = None
    line: int | None = None  # 1-based
    col: int | None = None  # 1-based
    hint: str | None = None
    severity: Severity = "error"
    stage: Stage = "validate"
    code: str = "invalid"

    @property
    def location(self) -> str:
        """`FILE:LINE:COL`, as much of it as is known; a command-line mistake names the command."""
        where = self.file or ("specml" if self.stage == "usage" else "<spec>")
        if self.line is not None:
            where += f":{self.line}"
            if self.col is not None:
                where += f":{self.col}"
        return where

    @property
    def yaml_path(self) -> str:
        return format_path(self.path)

    def render(self) -> str:
        """Human text: location, severity, YAML path, message and hint."""
        text = f"{self.location}: {self.severity}: {self.yaml_path}: {self.message}"
        if self.hint:
            text += f"\n    hint: {self.hint}"
        return text

    def github(self) -> str:
        """A GitHub Actions workflow annotation line (properties only when known, escaped)."""
        kind = "error" if self.severity == "error" else "warning"

        def prop(value: object) -> str:
            return (
                str(value)
                .replace("%", "%25")
                .replace("\r", "%0D")
                .replace("\n", "%0A")
                .replace(":", "%3A")
                .replace(",", "%2C")
            )

        parts = [f"file={prop(self.file)}"] if self.file else []
        if self.file and self.line is not None:
            parts.append(f"line={self.line}")
        if self.file and self.col is not None:
            parts.append(f"col={self.col}")
        if self.code:
            parts.append(f"title={prop('specml ' + self.code)}")
        msg = f"{self.yaml_path}: {self.message}" if self.path else self.message
        if self.hint:
            msg += f" ({self.hint})"
        msg = msg.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
        head = f"::{kind} {','.join(parts)}" if parts else f"::{kind}"
        return f"{head}::{msg}"

    def to_json(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "col": self.col,
            "path": self.yaml_path,
            "severity": self.severity,
            "stage": self.stage,
            "code": self.code,
            "message": self.message,
            "hint": self.hint,
        }


@dataclass
class SpecError(Exception):
    """Raised with every problem found; its text is built from the diagnostics."""

    diagnostics: list[Diagnostic] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(self.__str__())

    def __str__(self) -> str:
        return "\n".join(d.render() for d in self.diagnostics)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]


class LoadError(SpecError):
    """The file could not be read or is not safe, well-formed YAML."""


class SpecValidationError(SpecError):
    """The spec does not fit the models or the cross-reference rules."""


class TargetError(SpecError):
    """A target failed to compile, plan or apply (or its extra is not installed)."""
