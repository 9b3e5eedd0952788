"""Raw inputs and the `label` output, grafted around a family's exported ONNX graph.

A family exports its graph with categorical inputs as int64 indices (named `index_name(input)`);
`graft_raw_io` puts an `ai.onnx.ml.LabelEncoder` in front of each (raw string or int64 value ->
index, per the input's Vocabulary), renames nothing else, orders the graph inputs as the Plan does
and, for classification, adds `label`: the class name of the predicted class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from specml.runtime.encoding import Vocabulary, class_names

OPSET = 17  # ai.onnx; every server we target (onnxruntime 1.1x+, Triton's ORT backend) runs it
ML_OPSET = 3  # ai.onnx.ml, the release paired with ai.onnx 17
OUTPUT = "output"
LABEL = "label"


@dataclass(frozen=True)
class RawInput:
    """One graph input as served: its name, Open Inference Protocol datatype and vocabulary."""

    name: str
    datatype: str  # FP32 | INT64 | BYTES
    vocabulary: Vocabulary | None = None  # None: numeric, fed to the graph as is


def index_name(name: str) -> str:
    """The name of a categorical input's index tensor inside the graph."""
    return f"specml_index/{name}"


def _encoder_node(raw: RawInput) -> object:
    """LabelEncoder: raw value -> index (unknown bucket by default; "" -> the missing index)."""
    from onnx import helper

    vocab = raw.vocabulary
    assert vocab is not None
    values = list(range(len(vocab.values)))
    attrs: dict[str, Any] = {"default_int64": vocab.unknown_index}
    if vocab.kind == "string":
        keys = [str(v) for v in vocab.values] + [""]
        attrs["keys_strings"] = keys
        attrs["values_int64s"] = values + [vocab.missing_index]
    else:
        keys_int = [int(v) for v in vocab.values]
        if not keys_int:  # LabelEncoder needs one key; this one maps to the default anyway
            keys_int, values = [np.iinfo(np.int64).min], [vocab.unknown_index]
        attrs["keys_int64s"] = keys_int
        attrs["values_int64s"] = values
    return helper.make_node(
        "LabelEncoder",
        [raw.name],
        [index_name(raw.name)],
        name=f"encode/{raw.name}",
        domain="ai.onnx.ml",
        **attrs,
    )


def _label_nodes(task: str, classes: Sequence) -> tuple[list, list]:
    """Nodes (and initializers) computing `label` [N,1] from `output`."""
    from onnx import TensorProto, helper

    names = class_names(tuple(classes))
    nodes, inits = [], []
    if task == "binary_classification":
        inits.append(helper.make_tensor("specml_label/half", TensorProto.FLOAT, [], [0.5]))
        nodes.append(
            helper.make_node("Greater", [OUTPUT, "specml_label/half"], ["specml_label/positive"])
        )
        nodes.append(
            helper.make_node(
                "Cast", ["specml_label/positive"], ["specml_label/index"], to=TensorProto.INT64
            )
        )
    else:
        nodes.append(
            helper.make_node("ArgMax", [OUTPUT], ["specml_label/index"], axis=1, keepdims=1)
        )
    nodes.append(
        helper.make_node(
            "LabelEncoder",
            ["specml_label/index"],
            [LABEL],
            name="decode/label",
            domain="ai.onnx.ml",
            keys_int64s=list(range(len(names))),
            values_strings=names,
            default_string="",
        )
    )
    return nodes, inits


def predicted_labels(task: str, classes: tuple | None, output: np.ndarray) -> np.ndarray:
    """Class names of the predicted classes ([N,1] objects), as the graph's `label` computes them:
    binary P(positive) > 0.5, multiclass the first arg max."""
    if task == "regression" or not classes:
        raise ValueError("a regression model has no label output")
    if task == "binary_classification":
        index = (output.reshape(-1) > 0.5).astype(np.int64)
    else:
        index = output.argmax(1)
    return np.asarray(class_names(classes), dtype=object)[index].reshape(-1, 1)


def graft_raw_io(
    model: object, inputs: Sequence[RawInput], task: str, classes: Sequence | None
) -> object:
    """The exported model with raw-value inputs in `inputs` order and, for classification, a
    `label` output; checked with onnx.checker."""
    import onnx
    from onnx import TensorProto, helper

    assert isinstance(model, onnx.ModelProto)
    graph = model.graph
    existing = {vi.name: vi for vi in graph.input}
    new_inputs, encoders = [], []
    for raw in inputs:
        if raw.vocabulary is None:
            new_inputs.append(
                existing.get(raw.name)
                or helper.make_tensor_value_info(raw.name, TensorProto.FLOAT, ["batch", 1])
            )
            continue
        elem = TensorProto.STRING if raw.datatype == "BYTES" else TensorProto.INT64
        new_inputs.append(helper.make_tensor_value_info(raw.name, elem, ["batch", 1]))
        encoders.append(_encoder_node(raw))
    label_nodes, label_inits = (
        _label_nodes(task, classes or ()) if task != "regression" else ([], [])
    )
    nodes = [*encoders, *graph.node, *label_nodes]
    del graph.input[:]
    graph.input.extend(new_inputs)
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(label_inits)
    if label_nodes:
        graph.output.append(helper.make_tensor_value_info(LABEL, TensorProto.STRING, ["batch", 1]))
    if not any(op.domain == "ai.onnx.ml" for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid("ai.onnx.ml", ML_OPSET))
    onnx.checker.check_model(model, full_check=True)
    return model
