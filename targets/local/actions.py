"""What a critical alert or a due trigger makes the local target do: roll back or retrain."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from specml.compiler.ir import Plan
from specml.targets.local import rollout as local_rollout


def rollback_rollout(
    plan: Plan, base_dir: Path, reason: str, registry: Any = None
) -> dict[str, Any]:
    """Roll back the rollout in progress (no-op with a note when none is running)."""
    from specml.targets.local import promotion

    path = local_rollout.state_path(plan, base_dir)
    if not path.exists():
        return {"action": "rollback", "done": False, "note": "no rollout in progress"}
    registry = registry or local_rollout.registry_for(plan, base_dir)
    promotion.finish_pending(plan, base_dir, registry)
    ctl = promotion.resume(plan, base_dir, registry)
    if ctl.state.done:
        return {"action": "rollback", "done": False, "note": f"rollout already {ctl.state.status}"}
    ctl.rollback(reason)
    promotion.finish_pending(plan, base_dir, registry)  # the journaled rollback, cleared
    return {
        "action": "rollback",
        "done": True,
        "version": ctl.state.challenger_version,
        "reason": reason,
    }


def start_rollout(
    plan: Plan, base_dir: Path, challenger: str, champion: str | None, time_scale: float = 1.0
) -> dict[str, Any]:
    """Start the challenger's rollout (pending -> first step), persisted; returns its state."""
    ctl = local_rollout.start_rollout(
        plan,
        Path(base_dir),
        challenger_version=challenger,
        champion_version=champion,
        time_scale=time_scale,
    )
    return ctl.state.to_json()


def retrain(
    plan: Plan, base_dir: Path, reasons: list[str], time_scale: float = 1.0, console: Any = None
) -> dict[str, Any]:
    """Train again on current data; a new challenger (gates passed) starts its rollout."""
    from specml.targets.local.apply import ApplyOptions
    from specml.targets.local.errors import GateFailed
    from specml.targets.local.target import LocalTarget

    out: dict[str, Any] = {"reasons": reasons, "started_at": time.time()}
    try:
        result = LocalTarget().apply(
            plan, Path(base_dir), ApplyOptions(force=True, console=console)
        )
    except GateFailed as exc:
        out.update(status="gate_failed", error=str(exc))
        return out
    out.update(
        status="applied",
        run_id=result.run_id,
        model_version=result.model_version,
        promoted=result.promoted,
        aliases=result.aliases,
        metrics=result.metrics,
    )
    champion = result.aliases.get(plan.registry.champion_alias)
    if result.model_version and not result.promoted and plan.rollout is not None:
        state = start_rollout(plan, base_dir, result.model_version, champion, time_scale)
        out["rollout"] = {
            "status": state.get("status"),
            "step": state.get("step_index"),
            "challenger_version": state.get("challenger_version"),
            "champion_version": state.get("champion_version"),
        }
    return out
