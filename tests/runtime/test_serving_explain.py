"""Per-request contributions (`parameters: {explain: true}`) from a running server.

LightGBM and XGBoost models trained through their family on palmerpenguins (string island and
sex with missing values, NaN measurements, integer year), exported as the export step does
(model.onnx, the native booster, serving.json from the manifest writer), then served: the
contributions of each row plus the bias sum to the model's raw score, so they reproduce the
served `output`. Models without a booster and malformed requests get a 400.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from specml.compiler.api import validate_text
from specml.compiler.ir import FeatureRef, Plan
from specml.compiler.lower import lower
from specml.runtime.encoding import default_categorical, encode_labels, learn_classes
from specml.runtime.families import family_for
from specml.runtime.families.tree_booster import export_explainer
from specml.runtime.serving import ServerConfig, running_server
from specml.runtime.serving.testing import http_request, write_model_dir
from specml.runtime.steps.export import model_vocabularies, serving_manifest

pytest.importorskip("onnxruntime")

SPEC = """
apiVersion: specml/v1
kind: MLSystem
metadata: {{name: penguins, owner: tests}}
data:
  sources:
    rows: {{format: parquet, path: data/rows.parquet, timestamp: event_ts}}
features:
  entities:
    penguin: {{join_keys: [penguin_id], dtype: int64}}
  views:
    p:
      entity: penguin
      source: rows
      ttl: 30d
      fields: {{island: string, bill_length_mm: float32, year: int64, sex: string}}
  label: {{source: rows, field: target}}
training:
  task: {task}
  {num_classes}
  model: {{type: {family}, n_estimators: 40, learning_rate: 0.2, early_stopping_rounds: 10}}
  split: {{method: random, holdout: 0.2}}
  seed: 0
targets:
  local: {{workdir: .specml/explain}}
"""
# The spec's order: a string with missing values, a number with NaN, an integer category, a string.
INPUTS = {
    "island": ("string", True),
    "bill_length_mm": ("float32", False),
    "year": ("int64", True),
    "sex": ("string", True),
}
MLP_400 = "explanations are available for lightgbm and xgboost models"


def make_plan(family: str, task: str) -> Plan:
    """The spec lowered, its inputs native categoricals where marked (as the trees default)."""
    multi = task == "multiclass_classification"
    text = SPEC.format(task=task, family=family, num_classes="num_classes: 3" if multi else "")
    plan = lower(validate_text(text).spec)
    refs = tuple(
        FeatureRef(
            view_id="p",
            field=name,
            dtype=dtype,  # type: ignore[arg-type]
            categorical=default_categorical("native") if cat else None,
        )
        for name, (dtype, cat) in INPUTS.items()
    )
    return plan.model_copy(update={"training": plan.training.model_copy(update={"features": refs})})


def penguin_columns(task: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Raw columns (strings with None, NaN numbers, int64 year) and the label per task."""
    from palmerpenguins import load_penguins

    frame = load_penguins()
    cols = {
        "island": frame["island"].astype(object).where(frame["island"].notna(), None).to_numpy(),
        "bill_length_mm": frame["bill_length_mm"].to_numpy(np.float32, na_value=np.nan),
        "year": frame["year"].to_numpy(np.int64),
        "sex": frame["sex"].astype(object).where(frame["sex"].notna(), None).to_numpy(),
    }
    species = frame["species"].to_numpy(object)
    label = (
        np.where(species == "Adelie", "yes", "no")
        if task != "multiclass_classification"
        else species
    )
    return cols, label.astype(object)


def export_folder(family: str, task: str, folder: Path) -> tuple[Any, dict[str, np.ndarray]]:
    """Train through the family, export as the export step does; the model and check rows."""
    plan = make_plan(family, task)
    cols, raw_y = penguin_columns(task)
    order = np.random.default_rng(0).permutation(len(raw_y))
    train, val, check = order[:220], order[220:280], order[280:]
    classes = learn_classes(plan.training, plan.features.label, raw_y[train])
    y = encode_labels(raw_y, classes)
    part = lambda idx: ({k: v[idx] for k, v in cols.items()}, y[idx])  # noqa: E731
    model, _, _ = family_for(plan).fit(plan, part(train), part(val), classes, "cpu")
    model.export_onnx(folder / "model.onnx")
    manifest = serving_manifest(
        plan,
        None,
        version="1",
        classes=model.classes,
        positive_class=model.classes[1] if len(model.classes) == 2 else None,
        vocabularies=model_vocabularies(model, {}),
    )
    manifest["explain"] = export_explainer(model, folder)
    (folder / "serving.json").write_text(json.dumps(manifest))
    rows = {k: v[check] for k, v in cols.items()}
    odd = {  # unseen and missing categories, NaN numbers, an unseen year
        "island": np.array(["Atlantis", None, "", "Dream"], dtype=object),
        "bill_length_mm": np.array([np.nan, 39.0, np.nan, 1e6], dtype=np.float32),
        "year": np.array([1999, 2008, 2009, 2007], dtype=np.int64),
        "sex": np.array([None, "male", "unknown", ""], dtype=object),
    }
    return model, {k: np.concatenate([rows[k], odd[k]]) for k in rows}


def infer_body(columns: dict[str, np.ndarray], parameters: Any = None) -> str:
    """A JSON v2 infer request, missing strings as null."""
    datatypes = {"string": "BYTES", "float32": "FP32", "int64": "INT64"}
    inputs = []
    for name, (dtype, _) in INPUTS.items():
        values = columns[name]
        if dtype == "string":
            data: list[Any] = [None if v is None else str(v) for v in values]
        elif dtype == "float32":
            data = [None if np.isnan(v) else float(v) for v in values]
        else:
            data = [int(v) for v in values]
        inputs.append(
            {"name": name, "datatype": datatypes[dtype], "shape": [len(values), 1], "data": data}
        )
    body: dict[str, Any] = {"inputs": inputs}
    if parameters is not None:
        body["parameters"] = parameters
    return json.dumps(body)


def post(url: str, body: str, path: str = "/v2/models/penguins/infer") -> tuple[int, Any]:
    status, _, raw = http_request(url, "POST", path, body, {"Content-Type": "application/json"})
    return status, json.loads(raw)


def outputs_of(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {o["name"]: o for o in doc["outputs"]}


CASES = [
    ("lightgbm", "binary_classification"),
    ("xgboost", "binary_classification"),
    ("lightgbm", "multiclass_classification"),
    ("xgboost", "multiclass_classification"),
]


@pytest.mark.parametrize(("family", "task"), CASES)
def test_contributions_sum_to_the_served_score(family: str, task: str, tmp_path: Path) -> None:
    model, rows = export_folder(family, task, tmp_path)
    n, f = len(rows["year"]), len(INPUTS)
    assert (tmp_path / {"lightgbm": "model.txt", "xgboost": "model.json"}[family]).is_file()
    with running_server(ServerConfig(tmp_path, port=0, max_delay_ms=1)) as url:
        status, plain = post(url, infer_body(rows))
        assert status == 200, plain
        assert "contributions" not in outputs_of(plain)
        status, doc = post(url, infer_body(rows, {"explain": True}))
        assert status == 200, doc
        status, bad = post(url, infer_body(rows, {"explain": "yes"}))
        assert status == 400 and "parameters.explain must be a boolean" in bad["error"]
    out = outputs_of(doc)
    contrib = out["contributions"]
    assert contrib["datatype"] == "FP32"
    k = 1 if task == "binary_classification" else 3
    assert contrib["shape"] == [n, k * (f + 1)]
    names = [*INPUTS, "bias"]
    params = contrib["parameters"]
    if k == 1:
        assert params["columns"] == names and params["score"] == "log_odds"
    else:
        assert params["columns"] == [f"{c}:{x}" for c in model.classes for x in names]
        assert params["score"] == "logits"
    values = np.asarray(contrib["data"], dtype=np.float64).reshape(n, k, f + 1)
    score = values.sum(axis=2)  # [N, K] raw scores
    served = np.asarray(out["output"]["data"], dtype=np.float64).reshape(n, -1)
    assert np.array_equal(served, np.asarray(outputs_of(plain)["output"]["data"]).reshape(n, -1))
    if k == 1:
        proba = 1.0 / (1.0 + np.exp(-score))
    else:
        e = np.exp(score - score.max(axis=1, keepdims=True))
        proba = e / e.sum(axis=1, keepdims=True)
    assert float(np.max(np.abs(proba - served))) <= 1e-5
    assert np.allclose(served, model.predict(rows), atol=1e-5)
    assert np.abs(values[:, :, :f]).sum() > 0  # not everything in the bias


def test_booster_columns_encode_as_the_fitted_pipeline(tmp_path: Path) -> None:
    """The one mapping serving uses equals the graph's encoders on unseen and missing values."""
    from specml.runtime.families.tree_booster import booster_columns, booster_matrix
    from specml.runtime.families.trees import _raw_frame

    model, rows = export_folder("xgboost", "binary_classification", tmp_path)
    encode = model.pipeline.named_steps["encode"]
    want = np.asarray(encode.transform(_raw_frame(model.features, rows)), dtype=np.float32)
    as_served = {k: v.reshape(-1, 1) for k, v in rows.items()}
    got = booster_matrix(json.loads(json.dumps(booster_columns(model))), as_served)
    assert np.array_equal(np.isnan(want), np.isnan(got))
    assert np.array_equal(np.nan_to_num(want, nan=-7), np.nan_to_num(got, nan=-7))
    island = [c["name"] for c in booster_columns(model)].index("island")
    assert len(set(got[-4:-1, island])) == 2  # unseen "Atlantis" vs missing None / ""


def test_a_model_without_a_booster_answers_400(tmp_path: Path) -> None:
    folder = write_model_dir(
        tmp_path / "mlp",
        features=tuple(f"p:{n}" for n in INPUTS),
        model_name="penguins",
        categorical={"island": ("Biscoe", "Dream"), "year": (2007, 2008), "sex": ("m", "f")},
    )
    rows = {
        "island": np.array(["Dream", None], dtype=object),
        "bill_length_mm": np.array([40.0, np.nan], dtype=np.float32),
        "year": np.array([2007, 2008], dtype=np.int64),
        "sex": np.array(["m", "f"], dtype=object),
    }
    with running_server(ServerConfig(folder, port=0, max_delay_ms=1)) as url:
        status, doc = post(url, infer_body(rows, {"explain": True}))
        assert status == 400 and MLP_400 in doc["error"]
        status, doc = post(url, infer_body(rows, {"explain": False}))
        assert status == 200 and "contributions" not in outputs_of(doc)
        status, doc = post(url, infer_body(rows, {"explain": 1}))
        assert status == 400 and "parameters.explain" in doc["error"]
