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
from specml.compiler.api import plan_file
from specml.compiler.errors import TargetError
from specml.runtime.contract import StepContext, run_step
from specml.runtime.demo_data import asof_features, demo_tables, write_demo_data
from specml.runtime.steps.common import (
    TIMESTAMP,
    entity_join_keys,
    feature_matrix,
    feature_refs,
    label_vector,
    split_indices,
)

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
    x = asof_features(plan, tables, plan.features.label.source_id)
    for i, ref in enumerate(feature_refs(plan)):
        frame[ref] = x[:, i]
    frame.to_parquet(path, index=False)
    return path


def _fit(plan, ts: Path, device: str = "cpu"):  # noqa: ANN001, ANN202
    from specml.runtime.steps.train import fit

    frame = pd.read_parquet(ts)
    return fit(
        plan,
        feature_matrix(plan, frame),
        label_vector(plan, frame),
        split_indices(plan, frame),
        device,
    )


def test_training_is_deterministic_on_cpu(plan, tmp_path: Path) -> None:  # noqa: ANN001
    ts = training_set(plan, tmp_path / "ts.parquet")
    model_a, history_a, best_a = _fit(plan, ts)
    model_b, history_b, best_b = _fit(plan, ts)
    state_a, state_b = model_a.state_dict(), model_b.state_dict()
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key
    assert history_a == history_b and best_a == best_b
    assert history_a[-1]["train_loss"] < history_a[0]["train_loss"]  # it did learn


def test_split_is_by_time_and_disjoint(plan, tmp_path: Path) -> None:  # noqa: ANN001
    frame = pd.read_parquet(training_set(plan, tmp_path / "ts.parquet"))
    parts = split_indices(plan, frame)
    ts = frame[TIMESTAMP]
    assert ts.iloc[parts["train"]].max() <= ts.iloc[parts["validation"]].min()
    assert ts.iloc[parts["validation"]].max() <= ts.iloc[parts["holdout"]].min()
    assert len(parts["holdout"]) == round(len(frame) * plan.training.split.holdout)


def test_export_onnx_matches_torch_and_writes_the_serving_contract(plan, tmp_path: Path) -> None:  # noqa: ANN001
    from specml.runtime.modeling import predict, save_model
    from specml.runtime.steps.export import onnx_predict, onnx_session

    ts = training_set(plan, tmp_path / "ts.parquet")
    model, _, _ = _fit(plan, ts)
    save_model(model, tmp_path / "model", {"features": feature_refs(plan), "feature_repo": "/x"})
    ctx = StepContext(workdir=tmp_path, data_dir=tmp_path)
    out = run_step(
        "export_onnx",
        plan,
        ctx,
        {"model": tmp_path / "model", "training_set": ts},
        {"onnx_model": tmp_path / "onnx"},
    )
    assert out.values["onnx_max_abs_diff"] <= 1e-4
    manifest = json.loads((tmp_path / "onnx" / "serving.json").read_text())
    assert set(manifest) == {
        "model_name",
        "model_version",
        "task",
        "num_classes",
        "input_name",
        "output_name",
        "features",
        "entity_join_keys",
        "feature_repo",
        "feature_service_refs",
    }
    assert manifest["features"] == feature_refs(plan) == manifest["feature_service_refs"]
    assert (manifest["input_name"], manifest["output_name"]) == ("features", "output")
    assert manifest["entity_join_keys"] == ["customer_id"]
    # Imputation and scaling are inside the graph: a row of NaNs scores like the training means.
    session = onnx_session(tmp_path / "onnx" / "model.onnx")
    missing = np.full((3, len(feature_refs(plan))), np.nan, dtype="float32")
    means = np.tile(model.fill.numpy(), (3, 1)).astype("float32")
    assert np.allclose(onnx_predict(session, missing), predict(model, means), atol=1e-6)
    assert onnx_predict(session, missing).shape == (3, 1)


def test_export_fails_when_onnx_drifts_from_torch(plan, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """~5 s: an ONNX graph that differs from torch by 2e-4 (> 1e-4) stops the export, named."""
    from specml.runtime.modeling import save_model
    from specml.runtime.steps import export

    ts = training_set(plan, tmp_path / "ts.parquet", rows=300)
    model, _, _ = _fit(plan, ts)
    save_model(model, tmp_path / "model", {"features": feature_refs(plan), "feature_repo": None})
    real = export.onnx_predict
    monkeypatch.setattr(export, "onnx_predict", lambda sess, x: real(sess, x) + 2e-4)
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
    assert diag.code == "onnx_parity" and "max abs diff 0.0002 > 0.0001" in diag.message
    assert not (tmp_path / "onnx" / "serving.json").exists()  # nothing for the server to load
    demand = plan_file(SPECS / "demand.yaml")  # regression: the tolerance follows the magnitude
    assert export.parity_tolerance_for(demand, np.array([[250.0], [-3.0]])) == pytest.approx(0.025)
    assert export.parity_tolerance_for(plan, np.array([[0.9]])) == 1e-4


def test_gates_report_margins() -> None:
    from specml.runtime.steps.evaluate import gate_report

    plan = plan_file(SPECS / "demand.yaml")
    rows = {r["metric"]: r for r in gate_report(plan, {"rmse": 20.0, "mape": 0.5, "r2": 0.7})}
    assert rows["rmse"]["passed"] and rows["rmse"]["margin"] == pytest.approx(5.0)
    assert not rows["mape"]["passed"] and rows["mape"]["margin"] == pytest.approx(-0.15)
    assert rows["r2"]["passed"] and rows["r2"]["margin"] == pytest.approx(0.2)


def test_validate_data_reports_every_problem(plan, tmp_path: Path) -> None:  # noqa: ANN001
    ctx = StepContext(workdir=tmp_path / "w", data_dir=tmp_path)
    with pytest.raises(TargetError) as missing:
        run_step("validate_data", plan, ctx, {}, {"data_report": tmp_path / "r.json"})
    assert {d.code for d in missing.value.diagnostics} == {"missing_source"}
    assert len(missing.value.diagnostics) == 2  # both sources, reported together
    write_demo_data(plan, tmp_path, rows=200, seed=0)
    result = run_step("validate_data", plan, ctx, {}, {"data_report": tmp_path / "r.json"})
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["data_hash"] == result.values["data_hash"]
    assert report["sources"]["customers"]["rows"] == 200
    usage = tmp_path / "data/churn/usage.parquet"
    df = pd.read_parquet(usage).drop(columns=["logins_7d"])
    df["minutes_7d"] = df["minutes_7d"].astype(str)
    df.to_parquet(usage)
    with pytest.raises(TargetError) as bad:
        run_step("validate_data", plan, ctx, {}, {"data_report": tmp_path / "r.json"})
    messages = " | ".join(d.message for d in bad.value.diagnostics)
    assert "no column 'logins_7d'" in messages and "'minutes_7d' is object" in messages


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
    assert next(gpu_model.parameters()).device.type == "cpu"  # handed back on CPU for export
    assert abs(gpu_hist[-1]["train_loss"] - cpu_hist[-1]["train_loss"]) < 0.05
