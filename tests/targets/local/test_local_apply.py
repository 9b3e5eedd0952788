"""Local target: emit/check, and apply end to end (Feast -> torch -> MLflow -> ONNX -> skew check)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from specml.compiler.api import plan_file
from specml.runtime.demo_data import write_demo_data
from specml.targets import get_target
from specml.targets.local.state import STATE_FILE, load_state, plan_changes
from specml.targets.local.target import ApplyOptions, GateFailed, LocalTarget

SPECS = Path(__file__).resolve().parents[3] / "specs"
# Few rows, few epochs, a higher learning rate: the whole pipeline in about a minute on CPU.
FAST = {"epochs": 8, "lr": 0.01, "batch_size": 128}


def make_spec(folder: Path, tweak=None) -> Path:  # noqa: ANN001
    """A tmp copy of specs/churn.yaml with fast training and an optional tweak of the dict."""
    raw = yaml.safe_load((SPECS / "churn.yaml").read_text())
    for alert in raw["alerts"].values():  # YAML 1.1 reads the key `on` as True
        if True in alert:
            alert["on"] = alert.pop(True)
    raw["training"]["hyperparameters"].update(FAST)
    raw["targets"]["local"]["workdir"] = ".specml"
    if tweak:
        tweak(raw)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spec.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return folder / "spec.yaml"


def mlflow_client(base: Path):  # noqa: ANN201
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{base / '.specml' / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_registry_and_emit_are_deterministic(tmp_path: Path) -> None:
    target = get_target("local")
    assert isinstance(target, LocalTarget)
    plan = plan_file(SPECS / "churn.yaml")
    first = target.emit(plan, tmp_path / "a")
    second = target.emit(plan, tmp_path / "b")
    assert first.files == ("feature_repo/feature_store.yaml", "feature_repo/features.py", "plan.json")
    for name in first.files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    code = (tmp_path / "a" / "feature_repo/features.py").read_text()
    compile(code, "features.py", "exec")
    assert "FeatureView(\n    name='usage'" in code and "data/churn/usage.parquet" in code
    assert str(tmp_path) not in code  # no absolute paths in compiled output


def test_check_flags_gpu_without_cuda() -> None:
    import torch

    plan = plan_file(SPECS / "fraud.yaml")  # accelerator: gpu
    codes = {d.code for d in LocalTarget().check(plan)}
    assert ("no_cuda" in codes) == (not torch.cuda.is_available())
    assert "no_cuda" not in {d.code for d in LocalTarget().check(plan_file(SPECS / "churn.yaml"))}


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    base = tmp_path_factory.mktemp("apply")
    plan = plan_file(make_spec(base))
    write_demo_data(plan, base, rows=1500, seed=3)
    result = LocalTarget().apply(plan, base, ApplyOptions())
    return base, plan, result


@pytest.mark.slow
def test_apply_registers_exports_and_checks_skew(applied) -> None:  # noqa: ANN001
    base, plan, result = applied
    assert not result.up_to_date and result.promoted and result.model_version == "1"
    client = mlflow_client(base)
    version = client.get_model_version_by_alias("churn", "champion")
    assert version.version == "1"
    assert client.get_model_version_by_alias("churn", "challenger").version == "1"
    run = client.get_run(version.run_id)
    assert run.data.tags["specml.spec_hash"] == plan.spec_hash
    assert run.data.tags["specml.data_hash"].startswith("sha256:")
    assert "holdout_roc_auc" in run.data.metrics and "hp.lr" in run.data.params
    epochs = client.get_metric_history(version.run_id, "train_loss")
    assert len(epochs) == int(run.data.metrics["best_epoch"]) or len(epochs) >= 2
    assert result.metrics["roc_auc"] >= 0.75
    assert result.onnx_max_abs_diff is not None and result.onnx_max_abs_diff <= 1e-4
    skew = result.skew
    assert skew["passed"] and skew["compared_rows"] > 0
    assert skew["offline_vs_online_max_abs_diff"] <= 1e-5
    assert skew["feature_max_abs_diff"] <= 1e-5 and skew["features_missing_online"] == 0
    current = base / ".specml" / "serving" / "current"
    manifest = json.loads((current / "serving.json").read_text())
    assert manifest["model_version"] == "1" and (current / "model.onnx").is_file()
    assert Path(manifest["feature_repo"], "feature_store.yaml").is_file()
    state = load_state(base / ".specml")
    assert state["status"] == "applied" and state["aliases"] == {"challenger": "1", "champion": "1"}
    assert state["plan"]["spec_hash"] == plan.spec_hash and state["model_versions"] == ["1"]


@pytest.mark.slow
def test_second_apply_is_up_to_date_until_data_changes(applied) -> None:  # noqa: ANN001
    base, plan, first = applied
    runs_before = len(load_state(base / ".specml")["runs"])
    again = LocalTarget().apply(plan, base, ApplyOptions())
    assert again.up_to_date and again.run_id == first.run_id
    assert len(load_state(base / ".specml")["runs"]) == runs_before
    assert plan_changes(plan, base) == []
    retuned = plan_file(make_spec(base / "other", lambda r: r["training"]["hyperparameters"].update(
        epochs=9)))
    changes = LocalTarget().plan_changes(retuned, base)
    assert any("spec changed" in c for c in changes)
    assert any("training.hyperparameters.epochs: 8 -> 9" in c for c in changes)


@pytest.mark.slow
def test_impossible_gate_fails_and_registers_nothing(tmp_path: Path) -> None:
    def impossible(raw: dict) -> None:
        raw["training"]["gates"]["min"]["roc_auc"] = 0.999
        raw["training"]["hyperparameters"]["epochs"] = 2

    plan = plan_file(make_spec(tmp_path, impossible))
    write_demo_data(plan, tmp_path, rows=600, seed=1)
    with pytest.raises(GateFailed) as failed:
        LocalTarget().apply(plan, tmp_path, ApplyOptions())
    [diag] = failed.value.diagnostics
    assert diag.code == "gate_failed" and diag.path == ("training", "gates", "min", "roc_auc")
    assert "roc_auc >= 0.999" in diag.message and "missed by" in diag.message
    assert mlflow_client(tmp_path).search_registered_models() == []
    assert not (tmp_path / ".specml" / "serving").exists()
    state = load_state(tmp_path / ".specml")
    assert state["status"] == "gate_failed" and "plan" not in state
    assert (tmp_path / ".specml" / STATE_FILE).is_file()
    assert plan_changes(plan, tmp_path)[0].startswith("the last apply ended with status 'gate_failed'")
