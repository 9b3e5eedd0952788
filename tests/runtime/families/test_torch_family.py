"""The torch family on raw columns: training, save/load, and one ONNX graph on raw inputs that
matches torch on holdout, unseen and missing rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
import torch
from specml.compiler.ir import Plan
from specml.runtime.encoding import encode_labels, learn_classes
from specml.runtime.families import family_for
from specml.runtime.families import torch_family as tf
from specml.runtime.families.parity import check_parity, onnx_feed, parity_rows
from specml.runtime.steps.common import model_metadata

from .plans import categorical, columns_of, make_plan

NUMERIC = {
    "bill_length_mm": ("float32", None),
    "bill_depth_mm": ("float32", None),
    "flipper_length_mm": ("float32", None),
}


def _splits(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    n = len(frame)
    a, b = int(n * 0.7), int(n * 0.85)
    return {"train": frame.iloc[:a], "validation": frame.iloc[a:b], "holdout": frame.iloc[b:]}


def _fit(plan: Plan, frame: pd.DataFrame, label: str) -> tuple[Any, dict[str, Any]]:
    """Fit on the training part; return the model and the holdout columns and labels."""
    parts = _splits(frame)
    classes = None
    if plan.training.task != "regression":
        classes = learn_classes(
            plan.training, plan.features.label, parts["train"][label].to_numpy()
        )

    def xy(part: pd.DataFrame) -> tuple[dict[str, np.ndarray], np.ndarray]:
        y = part[label].to_numpy()
        y = y.astype(np.float32) if classes is None else encode_labels(y, classes)
        return columns_of(part, plan), y

    model, history, best = tf.fit(plan, xy(parts["train"]), xy(parts["validation"]), classes, "cpu")
    assert 1 <= best <= len(history)
    columns, y = xy(parts["holdout"])
    return model, {"columns": columns, "y": y, "history": history}


@pytest.fixture(scope="module")
def species(penguins: pd.DataFrame) -> tuple[Plan, Any, dict[str, Any]]:
    """Multiclass with string labels; string one_hot + embedding, integer ordinal inputs."""
    plan = make_plan(
        "multiclass_classification",
        {
            **NUMERIC,
            "island": ("string", categorical()),
            "sex": ("string", categorical("embedding", embedding_dim=2)),
            "year": ("int64", categorical("ordinal")),
        },
        epochs=25,
    )
    model, holdout = _fit(plan, penguins, "species")
    return plan, model, holdout


def test_multiclass_string_labels_learn_and_name_the_classes(species, tmp_path: Path) -> None:  # noqa: ANN001
    plan, model, holdout = species
    assert model.classes == ("Adelie", "Chinstrap", "Gentoo")
    out = model.predict(holdout["columns"])
    assert out.shape == (len(holdout["y"]), 3)
    assert np.allclose(out.sum(axis=1), 1.0, atol=1e-5)
    assert (out.argmax(axis=1) == holdout["y"]).mean() >= 0.9
    path = tmp_path / "model.onnx"
    model.export_onnx(path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = onnx_feed(session, holdout["columns"])
    out_onnx, label = session.run(["output", "label"], feed)
    names = np.asarray(model.classes, dtype=object)[out.argmax(axis=1)]
    assert label.shape == (len(out), 1) and label.reshape(-1).tolist() == names.tolist()
    assert np.max(np.abs(out_onnx - out)) <= 1e-5


def test_graph_inputs_are_named_typed_and_ordered_as_the_plan(species, tmp_path: Path) -> None:  # noqa: ANN001
    plan, model, _ = species
    model.export_onnx(tmp_path / "model.onnx")
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    onnx_type = {"FP32": "tensor(float)", "INT64": "tensor(int64)", "BYTES": "tensor(string)"}
    want = [(f.input_name, onnx_type[f.datatype]) for f in plan.training.features]
    assert [(i.name, i.type) for i in session.get_inputs()] == want
    assert all(i.shape[1] == 1 for i in session.get_inputs())
    outputs = {o.name: o for o in session.get_outputs()}
    assert outputs["output"].type == "tensor(float)" and outputs["output"].shape[1] == 3
    assert outputs["label"].type == "tensor(string)" and outputs["label"].shape[1] == 1


def test_parity_on_holdout_unseen_and_missing_rows(species, tmp_path: Path) -> None:  # noqa: ANN001
    plan, model, holdout = species
    rows = parity_rows(plan, model, holdout["columns"])
    assert "specml-unseen-category" in rows["island"].tolist()
    assert any(v is None for v in rows["sex"]) and np.isnan(rows["bill_length_mm"]).any()
    model.export_onnx(tmp_path / "model.onnx")
    assert check_parity(model, tmp_path / "model.onnx", rows) <= 1e-5


def test_save_load_round_trip_is_exact(species, tmp_path: Path) -> None:  # noqa: ANN001
    plan, model, holdout = species
    model.save(tmp_path / "m", {"mlflow_run_id": "r1"})
    loaded = family_for(plan).load(plan, tmp_path / "m")
    rows = parity_rows(plan, model, holdout["columns"])
    assert np.array_equal(loaded.predict(rows), model.predict(rows))
    assert loaded.classes == model.classes and loaded.vocabularies == model.vocabularies
    meta = model_metadata(tmp_path / "m")
    assert meta["mlflow_run_id"] == "r1" and meta["classes"] == ["Adelie", "Chinstrap", "Gentoo"]
    assert meta["categorical"]["island"]["vocabulary"] == ["Biscoe", "Dream", "Torgersen"]
    assert [i["name"] for i in meta["inputs"]] == [f.input_name for f in plan.training.features]
    assert meta["numeric"]["bill_length_mm"]["scale"] > 1.0


def test_vocabulary_comes_from_the_training_split_only(penguins: pd.DataFrame) -> None:
    frame = penguins.copy()
    parts = _splits(frame)
    frame.loc[parts["holdout"].index, "island"] = "Holdout Island"
    frame.loc[parts["validation"].index[:5], "island"] = "Validation Island"
    plan = make_plan(
        "multiclass_classification", {**NUMERIC, "island": ("string", categorical())}, epochs=2
    )
    model, _ = _fit(plan, frame, "species")
    assert set(model.vocabularies["island"].values) == set(parts["train"]["island"].unique())


def test_unseen_values_share_the_unknown_bucket(species) -> None:  # noqa: ANN001
    plan, model, holdout = species
    one = {k: v[:1].copy() for k, v in holdout["columns"].items()}
    a = {**one, "island": np.asarray(["Atlantis"], dtype=object), "year": np.asarray([1999])}
    b = {**one, "island": np.asarray(["Nowhere"], dtype=object), "year": np.asarray([3000])}
    assert np.array_equal(model.predict(a), model.predict(b))
    assert not np.array_equal(model.predict(a), model.predict(one))


@pytest.fixture(scope="module")
def sex(penguins: pd.DataFrame) -> tuple[Plan, Any, dict[str, Any]]:
    """Binary with a declared positive class (string label), linear model."""
    frame = penguins.dropna(subset=["sex"]).reset_index(drop=True)
    plan = make_plan(
        "binary_classification",
        {**NUMERIC, "body_mass_g": ("float32", None), "species": ("string", categorical())},
        model="linear",
        positive="female",
        epochs=25,
    )
    model, holdout = _fit(plan, frame, "sex")
    return plan, model, holdout


def test_binary_output_is_the_probability_of_the_declared_positive_class(
    sex, tmp_path: Path
) -> None:  # noqa: ANN001
    plan, model, holdout = sex
    assert model.classes == ("male", "female")
    out = model.predict(holdout["columns"])
    assert out.shape == (len(holdout["y"]), 1)
    assert ((out[:, 0] > 0.5) == (holdout["y"] == 1)).mean() >= 0.8  # y == 1: female
    path = tmp_path / "model.onnx"
    model.export_onnx(path)
    rows = parity_rows(plan, model, holdout["columns"])
    assert check_parity(model, path, rows) <= 1e-5
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got, label = session.run(["output", "label"], onnx_feed(session, rows))
    assert label.reshape(-1).tolist() == np.where(got[:, 0] > 0.5, "female", "male").tolist()


def test_regression_parity_and_target_scale(penguins: pd.DataFrame, tmp_path: Path) -> None:
    frame = penguins.dropna(subset=["body_mass_g"]).reset_index(drop=True)
    plan = make_plan(
        "regression",
        {**NUMERIC, "island": ("string", categorical("ordinal")), "sex": ("string", categorical())},
        epochs=30,
    )
    model, holdout = _fit(plan, frame, "body_mass_g")
    out = model.predict(holdout["columns"])
    rmse = float(np.sqrt(np.mean((out[:, 0] - holdout["y"]) ** 2)))
    assert rmse < 0.6 * float(np.std(holdout["y"]))  # beats predicting the mean
    model.export_onnx(tmp_path / "model.onnx")
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["output"]
    rows = parity_rows(plan, model, holdout["columns"])
    assert check_parity(model, tmp_path / "model.onnx", rows) <= 1e-5


@pytest.mark.parametrize("encoding", ["one_hot", "ordinal", "embedding"])
@pytest.mark.parametrize("arch", ["linear", "mlp"])
def test_every_encoding_and_architecture_exports_with_parity(
    penguins: pd.DataFrame, tmp_path: Path, encoding: str, arch: str
) -> None:
    plan = make_plan(
        "multiclass_classification",
        {
            "island": ("string", categorical(encoding, missing="unknown")),
            "sex": ("string", categorical(encoding)),
            "year": ("int64", categorical(encoding)),
            "flipper_length_mm": ("float32", None),
        },
        model=arch,
        epochs=3,
    )
    model, holdout = _fit(plan, penguins, "species")
    model.export_onnx(tmp_path / "model.onnx")
    rows = parity_rows(plan, model, holdout["columns"])
    assert check_parity(model, tmp_path / "model.onnx", rows) <= 1e-5


def test_training_is_deterministic_on_cpu(penguins: pd.DataFrame) -> None:
    plan = make_plan(
        "multiclass_classification",
        {**NUMERIC, "sex": ("string", categorical("embedding"))},
        epochs=3,
    )
    (a, ha), (b, hb) = (_fit(plan, penguins, "species") for _ in range(2))
    state_a, state_b = a.net.state_dict(), b.net.state_dict()
    assert state_a.keys() == state_b.keys()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert ha["history"] == hb["history"]
    assert ha["history"][-1]["train_loss"] < ha["history"][0]["train_loss"]


PENGUIN_SPEC = """
apiVersion: specml/v1
kind: MLSystem
metadata: {name: penguins, owner: tests}
data:
  sources:
    penguins: {format: parquet, path: data/penguins.parquet, timestamp: event_ts}
features:
  entities:
    penguin: {join_keys: [penguin_id], dtype: int64}
  views:
    body:
      entity: penguin
      source: penguins
      ttl: 30d
      fields:
        bill_length_mm: float32
        flipper_length_mm: float32
        island: {dtype: string, encoding: ordinal, categories: [Torgersen, Dream, Biscoe]}
        sex: {dtype: string, encoding: embedding, embedding_dim: 2}
        year: {dtype: int64, categorical: true}
  label: {source: penguins, field: species, classes: [Gentoo, Adelie, Chinstrap]}
training:
  task: multiclass_classification
  num_classes: 3
  model: {type: mlp, hidden: [16]}
  hyperparameters: {lr: 1.0e-2, epochs: 20, batch_size: 64}
  split: {method: random, holdout: 0.2}
  seed: 3
targets:
  local: {workdir: .specml/penguins}
"""


def test_spec_categoricals_and_declared_classes_end_to_end(
    penguins: pd.DataFrame, tmp_path: Path
) -> None:
    from specml.compiler.api import validate_text
    from specml.compiler.lower import lower

    plan = lower(validate_text(PENGUIN_SPEC).spec)
    model, holdout = _fit(plan, penguins, "species")
    assert model.classes == ("Gentoo", "Adelie", "Chinstrap")  # declared order, not sorted
    assert model.vocabularies["island"].values == ("Torgersen", "Dream", "Biscoe")
    assert (model.predict(holdout["columns"]).argmax(1) == holdout["y"]).mean() >= 0.9
    model.export_onnx(tmp_path / "model.onnx")
    rows = parity_rows(plan, model, holdout["columns"])
    assert check_parity(model, tmp_path / "model.onnx", rows) <= 1e-5


def test_integer_labels_and_only_categorical_inputs(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 400
    plan_ = rng.choice(np.asarray(["basic", "pro", "team", None], dtype=object), n)
    region = rng.choice(np.asarray([10, 20, 30]), n)
    target = ((plan_ == "pro") | (region == 30)).astype(np.int64)
    frame = pd.DataFrame({"plan": plan_, "region": region, "target": target})
    plan = make_plan(
        "binary_classification",
        {
            "plan": ("string", categorical(missing="unknown", unknown="error")),
            "region": ("int64", categorical("embedding")),
        },
        epochs=30,
    )
    model, holdout = _fit(plan, frame, "target")
    assert model.classes == (0, 1) and model.vocabularies["plan"].size == 4  # 3 + unknown
    assert ((model.predict(holdout["columns"])[:, 0] > 0.5) == holdout["y"]).mean() >= 0.95
    model.export_onnx(tmp_path / "model.onnx")
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.type for i in session.get_inputs()] == ["tensor(string)", "tensor(int64)"]
    feed = {
        "plan": np.asarray([["pro"], ["basic"], [""]], dtype=object),
        "region": np.asarray([[10], [10], [30]], dtype=np.int64),
    }
    assert session.run(["label"], feed)[0].reshape(-1).tolist() == ["1", "0", "1"]
    rows = parity_rows(plan, model, holdout["columns"])
    assert check_parity(model, tmp_path / "model.onnx", rows) <= 1e-5
