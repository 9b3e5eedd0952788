"""`specml rollout status`: a JSON-ready view of a rollout's state file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from specml.compiler.ir import SLO, Rollout
from specml.runtime.rollout.controller import SLO_FIGURES
from specml.runtime.rollout.state import RolloutState, load_state


def rollout_status(state_path: str | Path) -> dict[str, Any]:
    """Step, traffic split, live SLO figures against targets, failure streak and history."""
    return status_document(load_state(state_path))


def status_document(state: RolloutState) -> dict[str, Any]:
    """The status view of a state, wherever it is kept (a file, an InferenceService annotation)."""
    rollout = Rollout.model_validate(state.rollout)
    slo = SLO.model_validate(state.slo)
    i = state.step_index
    step = rollout.steps[i] if 0 <= i < len(rollout.steps) else None
    hold = step.duration_seconds * state.time_scale if step else 0.0
    figures = state.last_figures or {}
    return {
        "model": state.model,
        "challenger_version": state.challenger_version,
        "champion_version": state.champion_version,
        "status": state.status,
        "step": None
        if step is None
        else {
            "index": i,
            "of": len(rollout.steps),
            "kind": step.kind,
            "hold_seconds": hold,
            "held_seconds": state.held_seconds,
            "remaining_hold_seconds": max(hold - state.held_seconds, 0.0),
        },
        "traffic": {
            "challenger_percent": state.traffic_percent,
            "champion_percent": 100.0 - state.traffic_percent,
            "shadow_sample_percent": state.shadow_sample_percent,
        },
        "slo": {
            name: {
                "target": getattr(slo, name),
                "live": figures.get(name),
                "ok": None
                if getattr(slo, name) is None or figures.get(name) is None
                else figures[name] <= getattr(slo, name),
            }
            for name in SLO_FIGURES
            if getattr(slo, name) is not None
        },
        "alerts": figures.get("alert_levels", {}),
        "breaches": list(state.last_breaches),
        "consecutive_failures": state.consecutive_failures,
        "failure_limit": rollout.failure_limit,
        "analysis_interval_seconds": rollout.analysis_interval_seconds * state.time_scale,
        "time_scale": state.time_scale,
        "reason": state.reason,
        "updated_at": state.updated_at,
        "history": list(state.history),
    }
