"""The local target's error for a failed evaluation gate (the CLI maps it to exit 3)."""

from __future__ import annotations

from typing import Any

from specml.compiler.errors import Diagnostic, TargetError


class GateFailed(TargetError):
    """The challenger missed at least one gate; nothing was exported, registered or promoted."""

    @classmethod
    def from_gates(cls, gates: list[dict[str, Any]], run_id: str) -> GateFailed:
        """One diagnostic per failed gate, saying by how much it was missed."""
        diagnostics = []
        for g in gates:
            if g["passed"]:
                continue
            where = (
                ("training", "gates", "must_beat_production")
                if g.get("must_beat_production")
                else ("training", "gates", "min" if g["op"] == ">=" else "max", g["metric"])
            )
            champion = g.get("champion_value")
            scores = (
                f" (the champion scores {champion:.4f} on the same holdout)"
                if champion is not None
                else ""
            )
            diagnostics.append(
                Diagnostic(
                    f"gate failed: {g['gate']}: {g['metric']} = {g['value']:.4f}{scores}, "
                    f"missed by {-g['margin']:.4f} (run {run_id})",
                    path=where,
                    stage="target",
                    code="gate_failed",
                    hint="improve the model or data, or relax the gate; nothing was registered",
                )
            )
        err = cls(diagnostics)
        err.gates = gates  # type: ignore[attr-defined]
        return err
