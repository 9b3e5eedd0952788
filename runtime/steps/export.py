"""export_onnx: the torch model (preprocessing included) to ONNX, with a parity check and a manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from specml.compiler.ir import Plan
from specml.runtime.contract import StepContext, StepResult
from specml.runtime.steps.common import (
    INPUT_NAME,
    OUTPUT_NAME,
    entity_join_keys,
    feature_refs,
    need,
    step_error,
    write_json,
)

ONNX_FILE = "model.onnx"
MANIFEST = "serving.json"
OPSET = 17
PARITY_TOLERANCE = 1e-4


def serving_manifest(plan: Plan, feature_repo: str | None, version: str | None = None
                     ) -> dict[str, Any]:
    """serving.json, the contract with the model server (see runtime/steps/README.md)."""
    refs = feature_refs(plan)
    return {
        "model_name": plan.registry.name,
        "model_version": version,
        "task": plan.training.task,
        "num_classes": plan.training.num_classes,
        "input_name": INPUT_NAME,
        "output_name": OUTPUT_NAME,
        "features": refs,
        "entity_join_keys": entity_join_keys(plan),
        "feature_repo": feature_repo,
        "feature_service_refs": refs,
    }


def onnx_session(path: Path) -> Any:
    """An onnxruntime CPU session for a model file."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def onnx_predict(session: Any, features: Any) -> Any:
    """Score a float32 matrix with an ONNX session."""
    return session.run([OUTPUT_NAME], {INPUT_NAME: features.astype("float32")})[0]


def export_onnx(plan: Plan, ctx: StepContext, inputs: dict[str, Path], outputs: dict[str, Path]
                ) -> StepResult:
    """Export model.onnx (dynamic batch), check parity with torch on the holdout, write serving.json."""
    import numpy as np
    import torch

    from specml.runtime.modeling import load_model, predict
    from specml.runtime.steps.evaluate import holdout

    model, meta = load_model(plan, need(inputs, "model", "export_onnx"))
    _, x, _ = holdout(plan, need(inputs, "training_set", "export_onnx"))
    folder = need(outputs, "onnx_model", "export_onnx")
    folder.mkdir(parents=True, exist_ok=True)
    example = torch.as_tensor(x[: max(2, min(len(x), 8))])
    torch.onnx.export(
        model, (example,), str(folder / ONNX_FILE), input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME], dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        opset_version=OPSET, dynamo=False,
    )
    expected = predict(model, x)
    got = onnx_predict(onnx_session(folder / ONNX_FILE), x)
    max_diff = float(np.max(np.abs(expected - got))) if len(x) else 0.0
    if not max_diff <= PARITY_TOLERANCE:
        raise step_error(
            f"ONNX and torch disagree on the holdout: max abs diff {max_diff:.3g} > {PARITY_TOLERANCE}",
            hint="an operator exports differently; try another model.activation", code="onnx_parity")
    write_json(folder / MANIFEST, serving_manifest(plan, meta.get("feature_repo")))
    return StepResult(values={"onnx_max_abs_diff": max_diff, "rows_checked": int(len(x))},
                      metrics={"onnx_max_abs_diff": max_diff})
