"""The small interface every target implements: check, emit, and (where it applies) apply."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable

from specml.compiler.errors import Diagnostic
from specml.compiler.ir import Plan


@dataclass(frozen=True)
class EmitResult:
    """The files a target wrote, relative to the output folder, in a stable order."""

    out_dir: Path
    files: tuple[str, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)


@runtime_checkable
class Target(Protocol):
    """A compilation target. Implementations import their heavy stack lazily, inside methods."""

    name: ClassVar[str]
    extra: ClassVar[str]  # the pip extra that installs its stack: specml[<extra>]

    def check(self, plan: Plan) -> list[Diagnostic]:
        """What this target cannot express or provide for this Plan (unsupported features)."""
        ...

    def emit(self, plan: Plan, out_dir: Path) -> EmitResult:
        """Write the compiled, deterministic output for this Plan into out_dir."""
        ...
