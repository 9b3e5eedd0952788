"""export_onnx: the torch model (preprocessing included) to ONNX, with a parity check and a manifest."""

from __future__ import annotations

import warnings
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


def serving_manifest(
    plan: Plan, feature_repo: str | None, version: str | None = None
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


def parity_tolerance_for(plan: Plan, expected: Any) -> float:
    """Max abs torch-vs-ONNX difference allowed: 1e-4, scaled by the output's magnitude for
    regression (a float32 value near 1000 has a rounding step of 6e-5 by itself)."""
    import numpy as np

    if plan.training.task != "regression" or expected.size == 0:
        return PARITY_TOLERANCE
    return PARITY_TOLERANCE * max(1.0, float(np.nanmax(np.abs(expected))))


def onnx_session(path: Path) -> Any:
    """An onnxruntime CPU session for a model file."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def onnx_predict(session: Any, features: Any) -> Any:
    """Score a float32 matrix with an ONNX session."""
    return session.run([OUTPUT_NAME], {INPUT_NAME: features.astype("float32")})[0]


def export_onnx(
    plan: Plan, ctx: StepContext, inputs: dict[str, Path], outputs: dict[str, Path]
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
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated, and still exact here
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (example,),
            str(folder / ONNX_FILE),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    expected = predict(model, x)
    got = onnx_predict(onnx_session(folder / ONNX_FILE), x)
    max_diff = float(np.max(np.abs(expected - got))) if len(x) else 0.0
    tolerance = parity_tolerance_for(plan, expected)
    if not max_diff <= tolerance:
        raise step_error(
            f"ONNX and torch disagree on the holdout: max abs diff {max_diff:.3g} > {tolerance:.3g}",
            hint="an operator exports differently; try another model.activation",
            code="onnx_parity",
        )
    write_json(folder / MANIFEST, serving_manifest(plan, meta.get("feature_repo")))
    from specml.runtime.monitor.reference import (
        write_training_reference,  # drift reference (issue 4)
    )

    write_training_reference(plan, need(inputs, "training_set", "export_onnx"), expected, folder)
    return StepResult(
        values={
            "onnx_max_abs_diff": max_diff,
            "onnx_tolerance": tolerance,
            "rows_checked": int(len(x)),
        },
        metrics={"onnx_max_abs_diff": max_diff},
    )
