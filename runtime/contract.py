"""The step contract shared by every target: one function, typed inputs and outputs."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from specml.compiler.ir import Plan

# step kind -> "module:function" implementing it. Each function has the signature
#   fn(plan: Plan, ctx: StepContext, inputs: dict[str, Path], outputs: dict[str, Path]) -> StepResult
STEP_IMPLEMENTATIONS: dict[str, str] = {
    "validate_data": "specml.runtime.steps.data:validate_data",
    "materialize_features": "specml.runtime.steps.features:materialize_features",
    "build_training_set": "specml.runtime.steps.features:build_training_set",
    "train": "specml.runtime.steps.train:train",
    "evaluate": "specml.runtime.steps.evaluate:evaluate",
    "export_onnx": "specml.runtime.steps.export:export_onnx",
    "register": "specml.runtime.steps.register:register",
}


@dataclass(frozen=True)
class StepContext:
    """Where a step finds and keeps state; the same fields in every target."""

    workdir: Path  # state: feature repo, MLflow store, models (shared by all steps of a run)
    data_dir: Path  # base for relative data source paths (the spec's folder)
    tracking_uri: str | None = None  # MLflow tracking URI; default sqlite under workdir
    run_id: str | None = None  # pipeline run id, for lineage
    spec_yaml: str | None = (
        None  # the composed spec this run was planned from, when the runner has it
    )

    @property
    def mlflow_uri(self) -> str:
        from specml.runtime.layout import Workdir

        return self.tracking_uri or f"sqlite:///{Workdir(self.workdir).mlflow_db.resolve()}"


@dataclass
class StepResult:
    """What a step reports back: scalar outputs (e.g. gate_passed) and metrics."""

    values: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


def run_step(
    kind: str,
    plan: Plan | str,
    ctx: StepContext,
    inputs: Mapping[str, str | Path] | None = None,
    outputs: Mapping[str, str | Path] | None = None,
) -> StepResult:
    """Run one pipeline step by kind; the same code in every target."""
    if isinstance(plan, str):
        plan = Plan.from_json(plan)
    if kind not in STEP_IMPLEMENTATIONS:
        raise KeyError(f"unknown step kind {kind!r}; known: {sorted(STEP_IMPLEMENTATIONS)}")
    module_name, func_name = STEP_IMPLEMENTATIONS[kind].split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    return func(
        plan,
        ctx,
        {k: Path(v) for k, v in (inputs or {}).items()},
        {k: Path(v) for k, v in (outputs or {}).items()},
    )
