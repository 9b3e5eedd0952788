"""Steps without the feature store: validation errors, deterministic training, ONNX export, gates, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from specml.compiler.api import plan_file
from specml.compiler.errors import TargetError
from specml.runtime.contract import StepContext, run_step
from specml.runtime.demo_data import asof_columns, demo_tables, write_demo_data
from specml.runtime.steps.common import (
    TIMESTAMP,
    entity_join_keys,
    feature_refs,
    split_indices,
)
from specml.runtime.steps.features import training_column

SPECS = Path(__file__).resolve().parents[2] / "specs"
OVERRIDES = ["training.hyperparameters.epochs=4", "training.hyperparameters.batch_size=128"]


@pytest.fixture(scope="module")
def plan():  # noqa: ANN201
    return plan_file(SPECS / "churn.yaml", overrides=OVERRIDES)


def training_set(plan, path: Path, rows: int = 600, seed: int = 0) -> Path:  # noqa: ANN001
    """A training set shaped like build_training_set's, joined by pandas instead of Feast."""
    tables = demo_tables(plan, rows=rows, seed=seed)
    label = tables[plan.features.label.source_id]
    src = next(s for s in plan.features.sources if s.id == plan.features.label.source_id)
    frame = label[entity_join_keys(plan)].copy()
    frame[TIMESTAMP] = label[src.timestamp_field]
    frame[plan.features.label.field] = label[plan.features.label.field]
    raw = asof_columns(plan, tables, plan.features.label.source_id)
    for ref in plan.training.features:
        frame[ref.ref] = training_column(ref.datatype, raw[ref.ref]).to_numpy()
    frame.to_parquet(path, index=False)
    return path


def _fit(plan, ts: Path, device: str = "cpu"):  # noqa: ANN001, ANN202
    from specml.runtime.steps.train import fit_family, prepare

    columns, y, splits, classes = prepare(plan, pd.read_parquet(ts))
    return fit_family(plan, columns, y, splits, classes, device)


def _saved(plan, ts: Path, folder: Path):  # noqa: ANN001, ANN202
    """Fit and save a model folder as the train step does (no MLflow run)."""
    model, _, _ = _fit(plan, ts)
    model.save(folder, {"features": feature_refs(plan), "feature_repo": "/x"})
    return model


def test_training_is_deterministic_on_cpu(plan, tmp_path: Path) -> None:  # noqa: ANN001
    from specml.runtime.steps.common import feature_columns

    ts = training_set(plan, tmp_path / "ts.parquet")
    model_a, history_a, best_a = _fit(plan, ts)
    model_b, history_b, best_b = _fit(plan, ts)
    columns = feature_columns(plan, pd.read_parquet(ts))
    assert np.array_equal(model_a.predict(columns), model_b.predict(columns))
    assert history_a == history_b and best_a == best_b
    assert history_a[-1]["train_loss"] < history_a[0]["train_loss"]  # it did learn
    assert model_a.classes == (0, 1)  # learned from the 0/1 label, the positive class last


def test_split_is_by_time_and_disjoint(plan, tmp_path: Path) -> None:  # noqa: ANN001
    frame = pd.read_parquet(training_set(plan, tmp_path / "ts.parquet"))
    parts = split_indices(plan, frame)
    ts = frame[TIMESTAMP]
    assert ts.iloc[parts["train"]].max() <= ts.iloc[parts["validation"]].min()
    assert ts.iloc[parts["validation"]].max() <= ts.iloc[parts["holdout"]].min()
    assert len(parts["holdout"]) == round(len(frame) * plan.training.split.holdout)


def test_training_set_keeps_strings_and_feature_columns_are_raw(plan, tmp_path: Path) -> None:  # noqa: ANN001
    from specml.runtime.steps.common import feature_columns

    frame = pd.read_parquet(training_set(plan, tmp_path / "ts.parquet"))
    columns = feature_columns(plan, frame)
    assert list(columns) == [r.input_name for r in plan.training.features]
    plan_type = columns["plan_type"]
    assert plan_type.dtype == object and {"basic", "premium"} <= set(plan_type.tolist())
    assert any(v is None for v in plan_type)  # the demo data has a few missing categories
    assert columns["monthly_spend"].dtype == np.float32
    frame.loc[0, "customer_stats:monthly_spend"] = np.inf  # an infinity stays one
    assert np.isinf(feature_columns(plan, frame)["monthly_spend"][0])


def test_export_writes_named_inputs_and_matches_the_model(plan, tmp_path: Path) -> None:  # noqa: ANN001
    from specml.runtime.steps.export import onnx_predict, onnx_session

    ts = training_set(plan, tmp_path / "ts.parquet")
    model = _saved(plan, ts, tmp_path / "model")
    ctx = StepContext(workdir=tmp_path, data_dir=tmp_path)
    out = run_step(
        "export_onnx",
        plan,
        ctx,
        {"model": tmp_path / "model", "training_set": ts},
        {"onnx_model": tmp_path / "onnx"},
    )
    assert out.values["onnx_max_abs_diff"] <= 1e-5
    assert out.values["rows_checked"] > 120  # holdout rows plus unseen/missing rows
    manifest = json.loads((tmp_path / "onnx" / "serving.json").read_text())
    assert manifest["format"] == 2 and manifest["input_name"] is None
    assert [i["name"] for i in manifest["inputs"]] == [
        "tenure_months",
        "monthly_spend",
        "support_calls_30d",
        "plan_type",
        "logins_7d",
        "minutes_7d",
    ]
    assert {i["datatype"] for i in manifest["inputs"]} == {"FP32", "BYTES"}
    assert all(i["shape"] == [-1, 1] for i in manifest["inputs"])
    assert manifest["features"] == feature_refs(plan) == [i["ref"] for i in manifest["inputs"]]
    assert manifest["classes"] == [0, 1] and manifest["positive_class"] == 1
    vocab = manifest["categorical"]["plan_type"]
    assert vocab["vocabulary"] == list(model.vocabularies["plan_type"].values)
    assert set(vocab["vocabulary"]) == {"basic", "standard", "premium", "family", "business"}
    assert (vocab["unknown"], vocab["missing"]) == ("bucket", "bucket")
    assert manifest["entity_join_keys"] == ["customer_id"] and manifest["output_name"] == "output"
    # Raw strings in, the same scores as the trained model, unseen and missing values included.
    rows = {
        "tenure_months": np.array([12, np.nan, 3], "float32"),
        "monthly_spend": np.array([40.5, np.nan, 80.0], "float32"),
        "support_calls_30d": np.array([1, np.nan, 0], "float32"),
        "plan_type": np.array(["premium", None, "never-seen"], dtype=object),
        "logins_7d": np.array([5, np.nan, 2], "float32"),
        "minutes_7d": np.array([30.0, np.nan, 10.0], "float32"),
    }
    session = onnx_session(tmp_path / "onnx" / "model.onnx")
    np.testing.assert_allclose(onnx_predict(session, rows), model.predict(rows), atol=1e-5)
    labels = onnx_predict(session, rows, "label")
    assert labels.shape == (3, 1) and set(labels.reshape(-1)) <= {"0", "1"}


def test_export_fails_when_the_graph_has_a_tampered_vocabulary(
    plan,  # noqa: ANN001
    tmp_path: Path,
    monkeypatch,  # noqa: ANN001
) -> None:
    """~5 s: a graph whose string encoder maps categories differently from the trained model
    fails the parity check; no serving.json, no model.onnx for anything to register."""
    import onnx
    from specml.runtime.steps import evaluate

    ts = training_set(plan, tmp_path / "ts.parquet", rows=400)
    _saved(plan, ts, tmp_path / "model")
    real = evaluate.load_trained

    def tampered(plan, folder):  # noqa: ANN001, ANN202
        model, meta = real(plan, folder)
        export = model.export_onnx

        def export_tampered(path: Path) -> None:
            export(path)
            graph = onnx.load(str(path))
            node = next(n for n in graph.graph.node if n.name == "encode/plan_type")
            keys = next(a for a in node.attribute if a.name == "keys_strings")
            keys.strings[0], keys.strings[1] = keys.strings[1], keys.strings[0]
            onnx.save(graph, str(path))

        model.export_onnx = export_tampered
        return model, meta

    monkeypatch.setattr(evaluate, "load_trained", tampered)
    ctx = StepContext(workdir=tmp_path, data_dir=tmp_path)
    with pytest.raises(TargetError) as failed:
        run_step(
            "export_onnx",
            plan,
            ctx,
            {"model": tmp_path / "model", "training_set": ts},
            {"onnx_model": tmp_path / "onnx"},
        )
    [diag] = failed.value.diagnostics
    assert diag.code == "onnx_parity" and "max abs diff" in diag.message
    assert not (tmp_path / "onnx" / "serving.json").exists()  # nothing for the server to load
    assert not (tmp_path / "onnx" / "model.onnx").exists()


def test_parity_tolerance_follows_the_magnitude_for_regression(plan) -> None:  # noqa: ANN001
    from specml.runtime.steps import export

    demand = plan_file(SPECS / "demand.yaml")
    assert export.parity_tolerance_for(demand, np.array([[250.0], [-3.0]])) == pytest.approx(0.0025)
    assert export.parity_tolerance_for(plan, np.array([[0.9]])) == 1e-5


def test_gates_report_margins() -> None:
    from specml.runtime.steps.evaluate import gate_report

    plan = plan_file(SPECS / "demand.yaml")
    rows = {r["metric"]: r for r in gate_report(plan, {"rmse": 20.0, "mape": 0.5, "r2": 0.7})}
    assert rows["rmse"]["passed"] and rows["rmse"]["margin"] == pytest.approx(5.0)
    assert not rows["mape"]["passed"] and rows["mape"]["margin"] == pytest.approx(-0.15)
    assert rows["r2"]["passed"] and rows["r2"]["margin"] == pytest.approx(0.2)


def _validate(plan, tmp_path: Path) -> list:  # noqa: ANN001
    ctx = StepContext(workdir=tmp_path / "w", data_dir=tmp_path)
    with pytest.raises(TargetError) as failed:
        run_step("validate_data", plan, ctx, {}, {"data_report": tmp_path / "r.json"})
    return failed.value.diagnostics


def test_validate_data_reports_every_problem_at_its_spec_field(plan, tmp_path: Path) -> None:  # noqa: ANN001
    missing = _validate(plan, tmp_path)
    assert {d.code for d in missing} == {"missing_source"}
    assert len(missing) == 2  # both sources, reported together
    assert {d.path for d in missing} == {
        ("data", "sources", "customers", "path"),
        ("data", "sources", "usage", "path"),
    }
    write_demo_data(plan, tmp_path, rows=200, seed=0)
    ctx = StepContext(workdir=tmp_path / "w", data_dir=tmp_path)
    result = run_step("validate_data", plan, ctx, {}, {"data_report": tmp_path / "r.json"})
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["data_hash"] == result.values["data_hash"]
    assert report["sources"]["customers"]["rows"] == 200
    assert set(report["label"]["classes"]) == {"0", "1"}
    usage = tmp_path / "data/churn/usage.parquet"
    df = pd.read_parquet(usage).rename(columns={"logins_7d": "login_7d"})
    df["minutes_7d"] = df["minutes_7d"].astype(str)
    df.to_parquet(usage)
    customers = tmp_path / "data/churn/customers.parquet"
    cf = pd.read_parquet(customers)
    cf.loc[3, "monthly_spend"] = np.inf
    cf.loc[5, "churned"] = np.nan
    cf["plan_type"] = None
    cf.to_parquet(customers)
    by_code = {d.code: d for d in _validate(plan, tmp_path)}
    assert set(by_code) == {
        "missing_column",
        "bad_dtype",
        "infinite_values",
        "missing_label",
        "empty_feature",
    }
    assert "no column 'logins_7d'" in by_code["missing_column"].message
    assert by_code["missing_column"].hint == "did you mean 'login_7d'?"
    assert by_code["missing_column"].path == ("features", "views", "usage", "fields", "logins_7d")
    assert "'minutes_7d' is object" in by_code["bad_dtype"].message
    assert by_code["bad_dtype"].path == ("features", "views", "usage", "fields", "minutes_7d")
    assert "1 infinite value(s) (e.g. inf)" in by_code["infinite_values"].message
    spend = ("features", "views", "customer_stats", "fields", "monthly_spend")
    assert by_code["infinite_values"].path == spend
    assert "missing in 1 of 200 rows" in by_code["missing_label"].message
    assert by_code["missing_label"].path == ("features", "label", "field")
    assert by_code["empty_feature"].path[-1] == "plan_type"


@pytest.mark.parametrize(
    ("change", "code", "path", "text"),
    [
        (
            {"training": {"task": "multiclass_classification", "num_classes": 4}},
            "classes_mismatch",
            ("training", "num_classes"),
            "training.num_classes is 4 but label 'churned' has 2 classes",
        ),
        (
            {"features": {"label": {"classes": [0, 2]}}},
            "bad_label",
            ("features", "label", "classes"),
            "values [1] that are not among the declared classes [0, 2]",
        ),
    ],
)
def test_validate_data_checks_classes_against_the_spec(
    tmp_path: Path,
    change: dict,
    code: str,
    path: tuple,
    text: str,  # noqa: ANN001
) -> None:
    raw = yaml.safe_load((SPECS / "churn.yaml").read_text())
    for alert in raw["alerts"].values():
        if True in alert:
            alert["on"] = alert.pop(True)
    for section, values in change.items():
        for key, value in values.items():
            if isinstance(value, dict):
                raw[section][key].update(value)
            else:
                raw[section][key] = value
    if raw["training"]["task"] != "binary_classification":
        raw["training"]["gates"] = {"min": {"accuracy": 0.4}}
        raw["training"]["early_stopping"] = {"metric": "accuracy", "patience": 2}
        raw["alerts"].pop("accuracy")
        raw["retraining"]["triggers"] = [{"schedule": "@weekly"}]
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    plan = plan_file(tmp_path / "spec.yaml")
    demo = plan_file(SPECS / "churn.yaml")  # 0/1 labels
    write_demo_data(demo, tmp_path, rows=150, seed=0)
    [diag] = _validate(plan, tmp_path)
    assert (diag.code, diag.path) == (code, path)
    assert text in diag.message


def test_train_refuses_a_constant_feature_naming_its_field(plan, tmp_path: Path) -> None:  # noqa: ANN001
    ts = training_set(plan, tmp_path / "ts.parquet", rows=200)
    frame = pd.read_parquet(ts)
    frame["usage:logins_7d"] = 4.0
    frame.to_parquet(ts)
    ctx = StepContext(workdir=tmp_path / "w", data_dir=tmp_path)
    with pytest.raises(TargetError) as failed:
        run_step(
            "train",
            plan,
            ctx,
            {"training_set": ts},
            {"model": tmp_path / "model", "train_metrics": tmp_path / "m.json"},
        )
    [diag] = failed.value.diagnostics
    assert diag.code == "useless_feature" and "is constant (4.0)" in diag.message
    assert diag.path == ("features", "views", "usage", "fields", "logins_7d")


def test_train_records_classes_and_ends_the_run(plan, tmp_path: Path) -> None:  # noqa: ANN001
    """~3 s: the MLflow run holds the class mapping and ends FINISHED; a failing step ends it
    FAILED."""
    from mlflow.tracking import MlflowClient
    from specml.runtime.steps.tracking import end_run, run_status

    ts = training_set(plan, tmp_path / "ts.parquet", rows=300)
    ctx = StepContext(workdir=tmp_path / "w", data_dir=tmp_path)
    out = run_step(
        "train",
        plan,
        ctx,
        {"training_set": ts},
        {"model": tmp_path / "model", "train_metrics": tmp_path / "m.json"},
    )
    mlflow = MlflowClient(tracking_uri=ctx.mlflow_uri)
    run = mlflow.get_run(out.values["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.info.end_time is not None
    assert json.loads(run.data.params["label.classes"]) == [0, 1]
    meta = json.loads((tmp_path / "model" / "model.json").read_text())
    assert meta["classes"] == [0, 1] and meta["positive_class"] == 1
    with pytest.raises(RuntimeError), run_status(ctx, run.info.run_id):
        raise RuntimeError("boom")
    assert mlflow.get_run(run.info.run_id).info.status == "FAILED"
    end_run(ctx, run.info.run_id, "KILLED")
    assert mlflow.get_run(run.info.run_id).info.status == "KILLED"


def test_module_entry_prints_json_and_fails_cleanly(plan, tmp_path: Path) -> None:  # noqa: ANN001
    (tmp_path / "plan.json").write_text(plan.to_json())
    cmd = [
        sys.executable,
        "-m",
        "specml.runtime",
        "validate_data",
        "--plan",
        str(tmp_path / "plan.json"),
        "--workdir",
        str(tmp_path / "w"),
        "--data-dir",
        str(tmp_path),
        "--output",
        f"data_report={tmp_path / 'r.json'}",
    ]
    failed = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert failed.returncode == 1
    assert "not found" in failed.stderr and "Traceback" not in failed.stderr
    write_demo_data(plan, tmp_path, rows=100, seed=0)
    ok = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["values"]["data_hash"].startswith("sha256:")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_training_matches_cpu_quality(plan, tmp_path: Path) -> None:  # noqa: ANN001
    from specml.runtime.steps.train import training_device

    assert training_device(plan) == "cuda"  # accelerator: auto picks the GPU when there is one
    ts = training_set(plan, tmp_path / "ts.parquet", rows=1000)
    gpu_model, gpu_hist, _ = _fit(plan, ts, "cuda")
    _, cpu_hist, _ = _fit(plan, ts, "cpu")
    assert next(gpu_model.net.parameters()).device.type == "cpu"  # back on CPU for export
    assert abs(gpu_hist[-1]["train_loss"] - cpu_hist[-1]["train_loss"]) < 0.05
