"""A random-weight ONNX graph that follows the export contract, for serving tests and benches:
one [N, 1] input per feature (float32 / int64 / string), numeric ones imputed and scaled,
categorical ones one-hot with unknown and missing buckets (ai.onnx.ml LabelEncoder + OneHot), an
MLP, `output` and (classification) `label`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from specml.runtime.serving.tensors import INT64_MISSING


def _mlp_nodes(
    rng: np.random.Generator, width: int, hidden: tuple[int, ...], n_out: int, last: str
) -> tuple[list[Any], list[Any]]:
    """Gemm + ReLU layers from `h0` [N, width] to `last` [N, n_out] (pre-activation)."""
    from onnx import helper, numpy_helper

    nodes, inits = [], []
    sizes = [width, *hidden, n_out]
    for i in range(len(sizes) - 1):
        w = (rng.normal(size=(sizes[i], sizes[i + 1])) / np.sqrt(sizes[i])).astype(np.float32)
        b = (rng.normal(size=sizes[i + 1]) * 0.1).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        out = last if i == len(sizes) - 2 else f"z{i}"
        nodes.append(helper.make_node("Gemm", [f"h{i}", f"w{i}", f"b{i}"], [out]))
        if out != last:
            nodes.append(helper.make_node("Relu", [out], [f"h{i + 1}"]))
    return nodes, inits


def _category_nodes(
    name: str, vocabulary: tuple[Any, ...], integer: bool
) -> tuple[list[Any], list[Any], int]:
    """One-hot of a categorical input: vocabulary, then an unknown and a missing bucket."""
    from onnx import helper, numpy_helper

    size = len(vocabulary)
    missing_key: Any = INT64_MISSING if integer else ""
    keys = [*vocabulary, missing_key]
    values = [*range(size), size + 1]
    key_attr = "keys_int64s" if integer else "keys_strings"
    encoder = helper.make_node(
        "LabelEncoder",
        [name],
        [f"{name}_code"],
        domain="ai.onnx.ml",
        **{key_attr: keys},
        values_int64s=values,
        default_int64=size,  # the unknown bucket
    )
    depth = numpy_helper.from_array(np.array(size + 2, np.int64), f"{name}_depth")
    on_off = numpy_helper.from_array(np.array([0.0, 1.0], np.float32), f"{name}_onoff")
    flat = numpy_helper.from_array(np.array([-1, size + 2], np.int64), f"{name}_flat")
    nodes = [
        encoder,
        helper.make_node(
            "OneHot", [f"{name}_code", f"{name}_depth", f"{name}_onoff"], [f"{name}_hot3"]
        ),
        helper.make_node("Reshape", [f"{name}_hot3", f"{name}_flat"], [f"{name}_hot"]),
    ]
    return nodes, [depth, on_off, flat], size + 2


def make_tabular_onnx(
    path: Path,
    inputs: list[tuple[str, str, tuple[Any, ...] | None]],
    classes: tuple[str | int, ...] | None,
    hidden: tuple[int, ...] = (64, 32),
    seed: int = 0,
) -> Path:
    """Write a random-weight model per the export contract: one [N, 1] input per feature
    (`(name, FP32 | INT64 | BYTES, vocabulary or None)`), numeric ones imputed (NaN -> means) and
    scaled, categorical ones one-hot with unknown and missing buckets, an MLP, then `output`
    (binary: P(positive) [N, 1]; K classes: softmax [N, K]; regression `classes=None`: [N, 1])
    and, for classification, `label` (the class name, string [N, 1])."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    numeric = [name for name, datatype, _ in inputs if datatype == "FP32"]
    nodes: list[Any] = []
    inits: list[Any] = []
    parts: list[str] = []
    width = 0
    if numeric:
        n = len(numeric)
        means = rng.normal(size=n).astype(np.float32)
        scales = (1.0 + rng.random(n)).astype(np.float32)
        inits += [
            numpy_helper.from_array(means, "means"),
            numpy_helper.from_array(scales, "scales"),
        ]
        nodes += [
            helper.make_node("Concat", numeric, ["numeric"], axis=1),
            helper.make_node("IsNaN", ["numeric"], ["is_nan"]),
            helper.make_node("Where", ["is_nan", "means", "numeric"], ["imputed"]),
            helper.make_node("Sub", ["imputed", "means"], ["centred"]),
            helper.make_node("Div", ["centred", "scales"], ["scaled"]),
        ]
        parts.append("scaled")
        width += n
    for name, datatype, vocabulary in inputs:
        if datatype == "FP32":
            continue
        more, consts, size = _category_nodes(name, tuple(vocabulary or ()), datatype == "INT64")
        nodes += more
        inits += consts
        parts.append(f"{name}_hot")
        width += size
    nodes.append(helper.make_node("Concat", parts, ["h0"], axis=1))
    n_out = len(classes) if classes and len(classes) > 2 else 1
    more, weights = _mlp_nodes(rng, width, hidden, n_out, "logits")
    nodes += more
    inits += weights
    outputs = [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", n_out])]
    if classes is None:
        nodes.append(helper.make_node("Identity", ["logits"], ["output"]))
    else:
        names = [str(c) for c in classes]
        if len(classes) == 2:
            inits.append(numpy_helper.from_array(np.array(0.5, np.float32), "half"))
            nodes += [
                helper.make_node("Sigmoid", ["logits"], ["output"]),
                helper.make_node("Greater", ["output", "half"], ["is_positive"]),
                helper.make_node("Cast", ["is_positive"], ["class_index"], to=TensorProto.INT64),
            ]
        else:
            nodes += [
                helper.make_node("Softmax", ["logits"], ["output"], axis=-1),
                helper.make_node("ArgMax", ["output"], ["class_index"], axis=1, keepdims=1),
            ]
        nodes.append(
            helper.make_node(
                "LabelEncoder",
                ["class_index"],
                ["label"],
                domain="ai.onnx.ml",
                keys_int64s=list(range(len(names))),
                values_strings=names,
                default_string="",
            )
        )
        outputs.append(helper.make_tensor_value_info("label", TensorProto.STRING, ["N", 1]))
    onnx_types = {
        "FP32": TensorProto.FLOAT,
        "INT64": TensorProto.INT64,
        "BYTES": TensorProto.STRING,
    }
    graph = helper.make_graph(
        nodes,
        "specml_test_tabular",
        [helper.make_tensor_value_info(n, onnx_types[d], ["N", 1]) for n, d, _ in inputs],
        outputs,
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)]
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
