"""The export guard: unseen/missing rows are added, and a graph that differs from the model is
caught (a tampered vocabulary, wrong class names, changed weights)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pandas as pd
import pytest
from specml.compiler.ir import Plan
from specml.runtime.encoding import encode_labels, learn_classes
from specml.runtime.families import torch_family as tf
from specml.runtime.families.parity import check_parity, parity_rows

from .plans import categorical, columns_of, make_plan


@pytest.fixture(scope="module")
def exported(penguins: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A multiclass model (string + integer categoricals), its graph and its parity rows."""
    plan = make_plan(
        "multiclass_classification",
        {
            "flipper_length_mm": ("float32", None),
            "island": ("string", categorical()),
            "year": ("int64", categorical()),
        },
        epochs=15,
    )
    train, hold = penguins.iloc[:250], penguins.iloc[250:]
    classes = learn_classes(plan.training, plan.features.label, train["species"].to_numpy())
    xy = (columns_of(train, plan), encode_labels(train["species"].to_numpy(), classes))
    model, _, _ = tf.fit(plan, xy, xy, classes, "cpu")
    path = tmp_path_factory.mktemp("parity") / "model.onnx"
    model.export_onnx(path)
    rows = parity_rows(plan, model, columns_of(hold, plan))
    return {"plan": plan, "model": model, "path": path, "rows": rows, "n": len(hold)}


def _tamper(path: Path, out: Path, edit: Any) -> Path:
    graph = onnx.load(str(path))
    edit(graph)
    onnx.save(graph, str(out))
    return out


def _attribute(graph: onnx.ModelProto, node_input: str, name: str) -> onnx.AttributeProto:
    node = next(
        n for n in graph.graph.node if n.op_type == "LabelEncoder" and n.input[0] == node_input
    )
    return next(a for a in node.attribute if a.name == name)


def test_parity_rows_add_unseen_and_missing_values(exported: dict[str, Any]) -> None:
    plan: Plan = exported["plan"]
    rows, n, model = exported["rows"], exported["n"], exported["model"]
    # per categorical: unseen (+ missing for strings); per numeric: NaN; one all-missing row
    assert all(len(v) == n + 2 + 1 + 1 + 1 for v in rows.values())
    added = {k: v[n:] for k, v in rows.items()}
    assert [v for v in added["island"] if v not in model.vocabularies["island"].values] == [
        "specml-unseen-category",
        None,
        None,
    ]
    assert any(v not in model.vocabularies["year"].values for v in added["year"])
    assert rows["year"].dtype == np.int64 and rows["flipper_length_mm"].dtype == np.float32
    assert np.isnan(added["flipper_length_mm"]).sum() == 2
    assert [f.input_name for f in plan.training.features] == list(rows)


def test_untouched_graph_passes(exported: dict[str, Any]) -> None:
    assert check_parity(exported["model"], exported["path"], exported["rows"]) <= 1e-5


def test_tampered_vocabulary_fails_the_guard(exported: dict[str, Any], tmp_path: Path) -> None:
    def swap_keys(graph: onnx.ModelProto) -> None:
        keys = _attribute(graph, "island", "keys_strings").strings
        keys[0], keys[1] = keys[1], keys[0]

    bad = _tamper(exported["path"], tmp_path / "bad.onnx", swap_keys)
    assert check_parity(exported["model"], bad, exported["rows"]) > 1e-5


def test_tampered_integer_vocabulary_fails_the_guard(
    exported: dict[str, Any], tmp_path: Path
) -> None:
    def drop_a_code(graph: onnx.ModelProto) -> None:
        _attribute(graph, "year", "keys_int64s").ints[0] += 100  # that year becomes "unknown"

    bad = _tamper(exported["path"], tmp_path / "bad.onnx", drop_a_code)
    assert check_parity(exported["model"], bad, exported["rows"]) > 1e-5


def test_wrong_class_names_fail_the_guard(exported: dict[str, Any], tmp_path: Path) -> None:
    def rename(graph: onnx.ModelProto) -> None:
        names = _attribute(graph, "specml_label/index", "values_strings").strings
        names[0], names[2] = names[2], names[0]

    bad = _tamper(exported["path"], tmp_path / "bad.onnx", rename)
    assert check_parity(exported["model"], bad, exported["rows"]) >= 1.0


def test_changed_weights_fail_the_guard(exported: dict[str, Any], tmp_path: Path) -> None:
    def nudge(graph: onnx.ModelProto) -> None:
        init = next(i for i in graph.graph.initializer if i.data_type == onnx.TensorProto.FLOAT)
        values = onnx.numpy_helper.to_array(init).copy()
        values.flat[0] += 0.5
        init.CopyFrom(onnx.numpy_helper.from_array(values, init.name))

    bad = _tamper(exported["path"], tmp_path / "bad.onnx", nudge)
    assert check_parity(exported["model"], bad, exported["rows"]) > 1e-5
