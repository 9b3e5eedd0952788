"""INT8 guard: a quantized graph that loses more metric than allowed is refused, FP32 stays served."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from specml.compiler import ir
from specml.runtime.quantize import FP32_FILE, graph_output, guard_int8

INPUTS = ["a", "b", "c", "dead"]  # `dead` is 0 on every row: its weights never reach the output


def mlp_graph(path: Path, outlier: float | None) -> None:
    """A 4-64-1 sigmoid MLP on per-feature [N,1] inputs; `outlier` scales the dead input's weights."""
    rng = np.random.default_rng(0)
    w1 = rng.normal(0, 0.5, (4, 64)).astype(np.float32)
    if outlier is not None:
        w1[3, :] = outlier * np.abs(w1).max()
    b1 = rng.normal(0, 0.1, 64).astype(np.float32)
    w2 = rng.normal(0, 0.5, (64, 1)).astype(np.float32)
    nodes = [
        helper.make_node("Concat", INPUTS, ["x"], axis=1),
        helper.make_node("MatMul", ["x", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h"]),
        helper.make_node("MatMul", ["h", "w2"], ["z"]),
        helper.make_node("Sigmoid", ["z"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 1]) for n in INPUTS],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 1])],
        [
            numpy_helper.from_array(w1, "w1"),
            numpy_helper.from_array(b1, "b1"),
            numpy_helper.from_array(w2, "w2"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def plan(max_drop: float) -> ir.Plan:
    """What the guard reads: the task, its primary metric, the family and serving.optimize."""
    training = ir.Training.model_construct(
        task="binary_classification",
        primary_metric="roc_auc",
        model=ir.ModelArch.model_construct(type="mlp"),
    )
    endpoint = ir.Endpoint.model_construct(
        optimize=ir.Optimize(quantize="int8", max_metric_drop=max_drop)
    )
    return ir.Plan.model_construct(training=training, endpoint=endpoint)


def holdout(path: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """2000 rows; labels drawn from the FP32 graph's own probabilities (a model worth serving)."""
    rng = np.random.default_rng(1)
    cols = {n: rng.normal(0, 1, 2000).astype(np.float32) for n in INPUTS[:3]}
    cols["dead"] = np.zeros(2000, dtype=np.float32)
    p = graph_output(path, cols)[:, 0]
    return cols, (rng.random(2000) < p).astype(np.int64)


def test_guard_refuses_int8_that_drops_the_metric_and_keeps_fp32(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    mlp_graph(path, outlier=1000.0)
    original = path.read_bytes()
    cols, y = holdout(path)
    record = guard_int8(plan(0.002), path, cols, y)
    assert record is not None
    assert record["fp32"] > 0.7  # the FP32 graph ranks well
    assert record["drop"] > 0.002  # the outlier weight rounds every other weight to zero
    assert record["served"] == "fp32"
    assert "max_metric_drop" in record["reason"]
    assert path.read_bytes() == original
    assert not (tmp_path / FP32_FILE).exists()
    assert not (tmp_path / "model.int8.onnx").exists()


def test_guard_serves_int8_when_the_metric_holds(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    mlp_graph(path, outlier=None)
    cols, y = holdout(path)
    record = guard_int8(plan(0.01), path, cols, y)
    assert record is not None and record["served"] == "int8", record
    assert abs(record["drop"]) <= 0.01
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert ops & {"MatMulInteger", "DynamicQuantizeLinear", "QLinearMatMul"}
    assert (tmp_path / FP32_FILE).exists()
    served = graph_output(path, cols)
    assert served.shape == (2000, 1)


def test_tree_models_cannot_ask_for_int8(tmp_path: Path) -> None:
    from specml.compiler.api import validate_file
    from specml.compiler.errors import SpecError

    text = (Path(__file__).resolve().parents[2] / "specs" / "churn.yaml").read_text()
    start = text.index("  model:")
    text = text[:start] + "  model: {type: xgboost}\n" + text[text.index("\n", start) + 1 :]
    text = text.replace("serving:\n", "serving:\n  optimize: {quantize: int8}\n", 1)
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    with pytest.raises(SpecError) as info:
        validate_file(spec)
    errors = [d for d in info.value.diagnostics if d.severity == "error"]
    [diag] = [d for d in errors if str(d.yaml_path) == "serving.optimize.quantize"]
    assert "xgboost" in diag.message and "int8" in diag.message
    assert str(diag.yaml_path) == "serving.optimize.quantize"
    line = text.splitlines().index("  optimize: {quantize: int8}") + 1
    assert diag.line == line
