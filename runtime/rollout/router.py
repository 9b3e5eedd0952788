"""Weighted champion/challenger routing, deterministic by request id (a retry hits the same model)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

from specml.runtime.rollout.state import RolloutState, load_state

ModelRole = Literal["champion", "challenger"]
_SCALE = float(1 << 64)


def _unit(salt: str, request_id: str) -> float:
    """A uniform number in [0, 100) from a salted sha256 of the request id."""
    digest = hashlib.sha256(f"{salt}\0{request_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE * 100.0


class Route(NamedTuple):
    """Which model answers the user, and whether the request is also mirrored to the challenger."""

    model: ModelRole
    mirror: bool


@dataclass(frozen=True)
class Router:
    """Splits requests by hash: `traffic_percent` to the challenger, or shadow mirroring."""

    traffic_percent: float = 0.0
    shadow_sample_percent: float = 0.0
    salt: str = ""  # e.g. model + challenger version: a new rollout reshuffles who gets it

    def pick(self, request_id: str) -> ModelRole:
        """The model that answers this request; the same id always gets the same model.

        Raising the traffic share only moves champion requests over: a request that went to the
        challenger at 5 % still does at 20 %.
        """
        return "challenger" if _unit(self.salt, request_id) < self.traffic_percent else "champion"

    def route(self, request_id: str) -> Route:
        """`pick` plus the shadow mirror flag (shadow: the champion answers, the challenger copies)."""
        model = self.pick(request_id)
        mirror = (
            model == "champion"
            and _unit(self.salt + "#shadow", request_id) < self.shadow_sample_percent
        )
        return Route(model, mirror)

    @classmethod
    def from_state(cls, state: RolloutState | str | Path) -> Router:
        """The router for a rollout's current step (all champion once rolled back)."""
        if not isinstance(state, RolloutState):
            state = load_state(state)
        salt = f"{state.model}:{state.challenger_version}"
        return cls(state.traffic_percent, state.shadow_sample_percent, salt)
