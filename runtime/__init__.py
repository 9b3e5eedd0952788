"""specml.runtime: the step code that runs inside every target (local, KFP component, SageMaker job).

The contract every target relies on (do not change it without updating all targets):

    run_step(kind, plan, ctx, inputs, outputs) -> StepResult

- `kind` is an IR StepKind ("validate_data", "materialize_features", "build_training_set",
  "train", "evaluate", "export_onnx", "register").
- `plan` is the IR Plan (or its canonical JSON text).
- `ctx` is a StepContext: where state lives on this machine/pod.
- `inputs` / `outputs` map the IR Step's artifact names to local filesystem paths (files or
  folders). A KFP component passes its artifacts' `.path`; the local target passes workdir paths.
- The CLI entry is `python -m specml.runtime <kind> --plan plan.json --workdir DIR
  --data-dir DIR [--input name=path ...] [--output name=path ...]`.
"""

from __future__ import annotations

from specml.runtime.contract import StepContext, StepResult, run_step

__all__ = ["StepContext", "StepResult", "run_step"]
