"""The rollout's persisted state and its promotion journal, written atomically so a crash never
leaves half a file."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from specml.runtime.files import write_json_atomic

Status = Literal["pending", "shadow", "canary", "promoted", "rolled_back"]
TERMINAL: tuple[str, ...] = ("promoted", "rolled_back")
STATE_FORMAT = 1


@dataclass
class RolloutState:
    """Where a rollout is: status, step, traffic, the failure streak, hold time and history."""

    model: str
    challenger_version: str
    champion_version: str | None
    rollout: dict[str, Any]  # the Plan's ir.Rollout, dumped, so resume needs only this file
    slo: dict[str, Any]  # the Plan's ir.SLO, dumped
    time_scale: float = 1.0
    status: Status = "pending"
    step_index: int = -1  # -1 while pending
    traffic_percent: float = 0.0  # users answered by the challenger
    shadow_sample_percent: float = 0.0  # requests mirrored to the challenger (shadow steps)
    held_seconds: float = 0.0  # healthy analysed time in the current step (scaled clock seconds)
    consecutive_failures: int = 0
    last_tick_at: float | None = None
    started_at: float | None = None
    updated_at: float | None = None
    reason: str | None = None  # why it was promoted / rolled back
    last_figures: dict[str, Any] = field(default_factory=dict)
    last_breaches: list[str] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    format: int = STATE_FORMAT

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def save_state(state: RolloutState, path: str | Path) -> Path:
    """Write the state atomically and durably (see runtime.files)."""
    return write_json_atomic(path, state.to_json())


@dataclass(frozen=True)
class PromotionIntent:
    """A terminal decision recorded BEFORE acting on it (the promotion journal): `promote` or
    `rollback` of `version`; whoever finds it redoes every step (each one idempotent), then clears it."""

    action: Literal["promote", "rollback"]
    model: str
    version: str
    reason: str
    previous: str | None = None  # the champion it replaces (promote)
    at: float | None = None
    format: int = STATE_FORMAT


def save_intent(intent: PromotionIntent, path: str | Path) -> Path:
    """Record the intent atomically (fsynced): it exists whole, or not at all."""
    return write_json_atomic(path, asdict(intent))


def load_intent(path: str | Path) -> PromotionIntent | None:
    """The unfinished intent, or None (no journal: nothing is half done)."""
    try:
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    return PromotionIntent(**payload)


def clear_intent(path: str | Path) -> None:
    """Every step is done: remove the journal (a no-op when it is already gone)."""
    Path(path).unlink(missing_ok=True)


def load_state(path: str | Path) -> RolloutState:
    """Read the state file (leftover temp files from a killed write are never read)."""
    from specml.compiler.errors import Diagnostic, TargetError

    path = Path(path)
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TargetError(
            [
                Diagnostic(
                    f"no rollout state at {path}",
                    hint="start a rollout first",
                    stage="target",
                    code="no_rollout",
                )
            ]
        ) from None
    except json.JSONDecodeError as exc:
        raise TargetError(
            [
                Diagnostic(
                    f"rollout state {path} is not valid JSON: {exc.msg}",
                    stage="target",
                    code="bad_rollout_state",
                    hint="restore it from the history or start over",
                )
            ]
        ) from None
    return RolloutState(**payload)
