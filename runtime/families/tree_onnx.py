"""ONNX export of an encoder + booster pipeline: skl2onnx for the encoders, onnxmltools for the trees.

skl2onnx names the converted classifier's outputs `label` (class index) and `probabilities`, and
the regressor's `variable`; the graph is then edited to the serving contract: `output` (P(positive)
[N,1], probabilities [N,K] or the value [N,1]) and `label` (class names, tensor(string) [N,1]).
"""

from __future__ import annotations

from typing import Any

from specml.compiler.ir import FeatureRef
from specml.runtime.families.onnx_io import ML_OPSET, OPSET

_registered = False


def register_tree_converters() -> None:
    """Teach skl2onnx the LightGBM and XGBoost estimators (onnxmltools' converters); idempotent."""
    global _registered
    if _registered:
        return
    import lightgbm as lgb
    import xgboost as xgb
    from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm
    from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    classifier_options = {"nocl": [True, False], "zipmap": [True, False, "columns"]}
    for cls, alias, converter in (
        (lgb.LGBMClassifier, "LightGbmLGBMClassifier", convert_lightgbm),
        (xgb.XGBClassifier, "XGBoostXGBClassifier", convert_xgboost),
    ):
        update_registered_converter(
            cls,
            alias,
            calculate_linear_classifier_output_shapes,
            converter,
            options=classifier_options,
        )
    for cls, alias, converter in (
        (lgb.LGBMRegressor, "LightGbmLGBMRegressor", convert_lightgbm),
        (xgb.XGBRegressor, "XGBoostXGBRegressor", convert_xgboost),
    ):
        update_registered_converter(cls, alias, calculate_linear_regressor_output_shapes, converter)
    _registered = True


def initial_types(features: tuple[FeatureRef, ...]) -> list[tuple[str, Any]]:
    """One [None, 1] input per feature: strings, int64 categoricals or float32 numbers."""
    from skl2onnx.common.data_types import FloatTensorType, Int64TensorType, StringTensorType

    kinds = {"BYTES": StringTensorType, "INT64": Int64TensorType, "FP32": FloatTensorType}
    return [(f.input_name, kinds[f.datatype]([None, 1])) for f in features]


def pipeline_to_onnx(
    pipeline: Any,
    features: tuple[FeatureRef, ...],
    task: str,
    classes: tuple[str | int, ...] | None,
) -> Any:
    """The ONNX ModelProto of a fitted pipeline, with the serving outputs."""
    from skl2onnx import convert_sklearn

    register_tree_converters()
    booster = pipeline.named_steps["model"]
    options = {id(booster): {"zipmap": False}} if task != "regression" else None
    model = convert_sklearn(
        pipeline,
        initial_types=initial_types(features),
        target_opset={"": OPSET, "ai.onnx.ml": ML_OPSET},
        options=options,
    )
    return to_serving_outputs(model, task, classes)


def to_serving_outputs(model: Any, task: str, classes: tuple[str | int, ...] | None) -> Any:
    """Rewire a converted model's outputs to `output` and, for classification, `label`."""
    from onnx import TensorProto, helper

    graph = model.graph
    _rename_output(graph, "output", "specml_converter_output")  # a converter's inner tensor name
    for o in graph.output:
        if o.name == "output":
            o.name = "specml_converter_output"
    produced = {o.name for o in graph.output}
    nodes = []
    shape_n1 = helper.make_tensor("specml_shape_n1", TensorProto.INT64, [2], [-1, 1])
    graph.initializer.append(shape_n1)
    if task == "regression":
        value = "variable" if "variable" in produced else graph.output[0].name
        nodes.append(helper.make_node("Reshape", [value, shape_n1.name], ["output"]))
        outputs = [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 1])]
    else:
        assert classes is not None, "a classifier needs its classes"
        index, proba = _rename_output(graph, "label", "specml_class_index"), "probabilities"
        if task == "binary_classification":
            for name, vals in (("specml_s", [1]), ("specml_e", [2]), ("specml_ax", [1])):
                graph.initializer.append(helper.make_tensor(name, TensorProto.INT64, [1], vals))
            nodes.append(
                helper.make_node("Slice", [proba, "specml_s", "specml_e", "specml_ax"], ["output"])
            )
            width: Any = 1
        else:
            nodes.append(helper.make_node("Identity", [proba], ["output"]))
            width = len(classes)
        nodes.append(
            helper.make_node(
                "LabelEncoder",
                [index],
                ["specml_class_name"],
                domain="ai.onnx.ml",
                keys_int64s=list(range(len(classes))),
                values_strings=[str(c) for c in classes],
                default_string="",
            )
        )
        nodes.append(helper.make_node("Reshape", ["specml_class_name", shape_n1.name], ["label"]))
        outputs = [
            helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", width]),
            helper.make_tensor_value_info("label", TensorProto.STRING, ["N", 1]),
        ]
    graph.node.extend(nodes)
    del graph.output[:]
    graph.output.extend(outputs)
    return model


def _rename_output(graph: Any, old: str, new: str) -> str:
    """Rename every use of a tensor name (a converter's output we re-derive from)."""
    for node in graph.node:
        for i, name in enumerate(node.output):
            if name == old:
                node.output[i] = new
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
    return new
