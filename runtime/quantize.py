"""`serving.optimize: {quantize: int8}`: dynamic INT8 weights for MLP graphs, guarded by the metric.

onnxruntime's dynamic quantization stores MatMul/Gemm weights as int8 (one scale per tensor) and
quantizes activations on the fly. Per-row outputs can move a lot while the metric holds, or the
metric can collapse (a single large weight stretches the scale and rounds the rest to zero), so
the guard scores both graphs on the holdout and serves the INT8 one only when the task's primary
metric loses at most `max_metric_drop`; otherwise the FP32 graph stays, and the record says why.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from specml.compiler.ir import Plan

FP32_FILE = "model.fp32.onnx"


def quantize_int8(source: Path, target: Path) -> None:
    """Write the dynamically INT8-quantized copy of an ONNX graph (MatMul/Gemm weights)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(source),
        str(target),
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul", "Gemm"],
    )


def graph_output(path: Path, columns: Mapping[str, np.ndarray]) -> np.ndarray:
    """The graph's `output` on raw columns."""
    from specml.runtime.steps.export import onnx_predict, onnx_session

    return onnx_predict(onnx_session(path), dict(columns))


def guard_int8(
    plan: Plan, model_path: Path, columns: Mapping[str, np.ndarray], y: np.ndarray
) -> dict[str, Any] | None:
    """Quantize the exported graph when the Plan asks for it and keep it only if the holdout
    metric holds: then `model.onnx` is the INT8 graph and `model.fp32.onnx` the original.
    Returns the record for serving.json (None when the Plan does not ask)."""
    from specml.compiler.metrics import METRICS
    from specml.runtime.steps.metrics import compute_metrics

    optimize = plan.endpoint.optimize
    if optimize is None:
        return None
    if plan.training.model.type in ("lightgbm", "xgboost"):  # the spec refuses this already
        return {"quantize": optimize.quantize, "served": "fp32", "reason": "tree ensemble"}
    model_path = Path(model_path)
    int8_path = model_path.with_name("model.int8.onnx")
    quantize_int8(model_path, int8_path)
    metric, task = plan.training.primary_metric, plan.training.task
    fp32 = compute_metrics(task, y, graph_output(model_path, columns), [metric])[metric]
    int8 = compute_metrics(task, y, graph_output(int8_path, columns), [metric])[metric]
    drop = fp32 - int8 if METRICS[metric].higher_is_better else int8 - fp32
    record: dict[str, Any] = {
        "quantize": optimize.quantize,
        "metric": metric,
        "fp32": fp32,
        "int8": int8,
        "drop": drop,
        "max_metric_drop": optimize.max_metric_drop,
        "bytes_fp32": model_path.stat().st_size,
        "bytes_int8": int8_path.stat().st_size,
    }
    if drop <= optimize.max_metric_drop:
        shutil.copyfile(model_path, model_path.with_name(FP32_FILE))
        int8_path.replace(model_path)
        record["served"] = "int8"
    else:
        int8_path.unlink()
        record["served"] = "fp32"
        record["reason"] = (
            f"int8 loses {drop:.4g} {metric} on the holdout, more than "
            f"serving.optimize.max_metric_drop {optimize.max_metric_drop}"
        )
    return record
