"""Local target: emit/check, and apply end to end (Feast -> torch -> MLflow -> ONNX -> skew check)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from specml.compiler.api import plan_file, validate_file
from specml.compiler.lower import lower
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
    assert second.files == first.files
    assert first.files == (
        "feature_repo/feature_store.yaml",
        "feature_repo/features.py",
        "plan.json",
    )
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
    validated = validate_file(make_spec(base), overrides=["training.hyperparameters.epochs=8"])
    plan = lower(validated.spec)
    write_demo_data(plan, base, rows=1500, seed=3)
    options = ApplyOptions(quiet=True, spec_yaml=validated.composed_yaml())
    result = LocalTarget().apply(plan, base, options)
    return base, plan, result


@pytest.mark.slow
def test_apply_registers_exports_and_checks_skew(applied) -> None:  # noqa: ANN001
    """~40 s (the module's one full apply: 1500 rows, 8 epochs) + <1 s of checks."""
    from specml.runtime.steps.register import plan_hash
    from specml.runtime.steps.tracking import code_version

    base, plan, result = applied
    assert not result.up_to_date and result.promoted and result.model_version == "1"
    client = mlflow_client(base)
    version = client.get_model_version_by_alias("churn", "champion")
    assert str(version.version) == "1"  # MLflow 3 returns an int here
    assert str(client.get_model_version_by_alias("churn", "challenger").version) == "1"
    run = client.get_run(version.run_id)
    assert run.data.tags["specml.spec_hash"] == plan.spec_hash
    assert run.data.tags["specml.plan_hash"] == plan_hash(plan)
    assert run.data.tags["specml.data_hash"].startswith("sha256:")
    assert run.data.tags["specml.specml_version"] == code_version()["specml_version"]
    assert run.data.params["spec_hash"] == plan.spec_hash and run.data.params["hp.epochs"] == "8"
    assert "holdout_roc_auc" in run.data.metrics and "hp.lr" in run.data.params
    logged = json.loads(
        Path(
            client.download_artifacts(run.info.run_id, "plan/plan.json", str(base / "dl"))
        ).read_text()
    )
    assert logged["spec_hash"] == plan.spec_hash  # the resolved spec, as applied
    spec_text = Path(
        client.download_artifacts(run.info.run_id, "spec/spec.yaml", str(base / "dl"))
    ).read_text()
    assert "# layer: <override 1>" in spec_text  # the composed spec, with where it came from
    logged_spec = yaml.safe_load(spec_text)
    assert logged_spec["training"]["hyperparameters"]["epochs"] == 8
    assert logged_spec["metadata"]["name"] == plan.system.name
    epochs = client.get_metric_history(version.run_id, "train_loss")
    assert sorted(m.step for m in epochs) == list(range(1, int(run.data.metrics["epochs_run"]) + 1))
    assert len(client.get_metric_history(version.run_id, "val_roc_auc")) == len(epochs) >= 2
    assert result.metrics["roc_auc"] >= 0.75
    assert result.onnx_max_abs_diff is not None and result.onnx_max_abs_diff <= 1e-5
    assert run.info.status == "FINISHED" and run.info.end_time is not None
    assert run.data.tags["specml.gate_passed"] == "true"
    assert json.loads(run.data.tags["specml.classes"]) == [0, 1]
    assert (
        version.tags["specml.classes"] == "[0, 1]" and version.tags["specml.positive_class"] == "1"
    )
    skew = result.skew
    assert skew["passed"] and skew["compared_rows"] > 0
    assert skew["offline_vs_online_max_abs_diff"] <= 1e-5
    assert skew["offline_vs_served_max_abs_diff"] <= 1e-5  # through the real HTTP server
    assert skew["holdout_vs_served_inputs_max_abs_diff"] <= 1e-5  # named inputs, raw strings
    assert skew["served_inputs_rows"] > 0
    assert skew["feature_max_abs_diff"] <= 1e-5 and skew["features_missing_online"] == 0
    current = base / ".specml" / "serving" / "current"
    manifest = json.loads((current / "serving.json").read_text())
    assert manifest["model_version"] == "1" and (current / "model.onnx").is_file()
    assert Path(manifest["feature_repo"], "feature_store.yaml").is_file()
    state = load_state(base / ".specml")
    assert state["status"] == "applied" and state["aliases"] == {"challenger": "1", "champion": "1"}
    assert state["plan"]["spec_hash"] == plan.spec_hash and state["model_versions"] == ["1"]
    assert state["runs"][-1]["mlflow_run_id"] == version.run_id
    assert state["serving"] == {"current": {"version": "1", "path": str(current)}}
    assert state["runs"][-1]["data_hash"] == state["data_hash"] == run.data.tags["specml.data_hash"]


@pytest.mark.slow
def test_served_champion_answers_tritonclient_like_offline(applied) -> None:  # noqa: ANN001
    """~3 s: the published champion behind the real server; tritonclient.http with one named
    input per feature (strings as BYTES) and predict-by-entity give the offline predictions."""
    import numpy as np
    import tritonclient.http as th
    from specml.runtime.serving.testing import http_request
    from specml.runtime.steps.evaluate import holdout, load_trained
    from specml.targets.local.serve import server_config

    base, plan, result = applied
    run_dir = base / ".specml" / "runs" / result.run_id
    model, _ = load_trained(plan, run_dir / "train" / "model")
    rows, columns, _ = holdout(
        plan, run_dir / "build_training_set" / "training_set.parquet", model.classes
    )
    offline = model.predict(columns)
    assert np.isnan(columns["monthly_spend"]).any()  # missing values travel through the server
    assert any(v is None for v in columns["plan_type"])  # and missing strings
    from dataclasses import replace

    from specml.runtime.serving.server import running_server

    config = replace(server_config(plan, base, port=0), port=0)
    with running_server(config) as url:
        client = th.InferenceServerClient(url.removeprefix("http://"))
        assert client.is_server_ready() and client.is_model_ready("churn", "1")
        meta = client.get_model_metadata("churn")
        assert meta["versions"] == ["1"]
        assert [(i["name"], i["datatype"]) for i in meta["inputs"]][3] == ("plan_type", "BYTES")
        tensors = []
        for ref in plan.training.features:
            values = columns[ref.input_name]
            if ref.datatype == "BYTES":
                values = np.array(["" if v is None else v for v in values], dtype=object)
            tensor = th.InferInput(ref.input_name, [len(values), 1], ref.datatype)
            tensor.set_data_from_numpy(values.reshape(-1, 1))
            tensors.append(tensor)
        answer = client.infer("churn", tensors)
        client.close()
        np.testing.assert_allclose(answer.as_numpy("output"), offline, atol=1e-5, rtol=0)
        labels = answer.as_numpy("label").reshape(-1).astype(str)
        assert set(labels) <= {"0", "1"}
        assert (labels == np.where(offline[:, 0] > 0.5, "1", "0")).all()
        keys = [{"customer_id": int(k)} for k in rows["customer_id"].unique()[:20]]
        status, _, body = http_request(
            url, "POST", "/v1/models/churn/predict-by-entity", json.dumps({"entities": keys})
        )
        assert status == 200 and len(json.loads(body)["outputs"]["output"]) == len(keys)
        status, _, body = http_request(url, "POST", "/v2/models/churn/infer", '{"inputs": 3}')
        assert status == 400 and b"inputs" in body


@pytest.mark.slow
def test_second_apply_is_up_to_date_until_data_changes(applied) -> None:  # noqa: ANN001
    """<1 s: nothing changed, so nothing is retrained; plan shows spec and data edits."""
    base, plan, first = applied
    runs_before = len(load_state(base / ".specml")["runs"])
    trained_before = sorted((base / ".specml" / "runs").iterdir())
    again = LocalTarget().apply(plan, base, ApplyOptions(quiet=True))
    assert again.up_to_date and again.run_id == first.run_id
    assert len(load_state(base / ".specml")["runs"]) == runs_before
    assert plan_changes(plan, base) == []
    retuned = plan_file(
        make_spec(base / "other", lambda r: r["training"]["hyperparameters"].update(epochs=9))
    )
    changes = LocalTarget().plan_changes(retuned, base)
    assert any("spec changed" in c for c in changes)
    assert any("training.hyperparameters.epochs: 8 -> 9" in c for c in changes)
    assert sorted((base / ".specml" / "runs").iterdir()) == trained_before  # no new run


@pytest.mark.slow
def test_apply_serve_serves_the_champion_afterwards(applied, monkeypatch, capsys) -> None:  # noqa: ANN001
    """<1 s: `apply --serve` (up to date here) prints the outcome, then blocks in serve()."""
    base, plan, _ = applied
    served: list[tuple[object, Path]] = []
    monkeypatch.setattr(LocalTarget, "serve", lambda self, p, b, **kw: served.append((p, b)))
    result = LocalTarget().apply(plan, base, ApplyOptions(serve=True, quiet=True))
    assert result.up_to_date and served == [(plan, base.resolve())]
    assert "status: up to date" in capsys.readouterr().out


@pytest.mark.slow
def test_new_data_retrains_then_challenger_then_champion(applied) -> None:  # noqa: ANN001
    """~30 s, two trainings. New data: the retrained model must beat the champion's holdout score
    by 0.005 and does not (nothing registered, v1 still served). Without that rule (a spec change)
    v2 registers as the challenger only, since a rollout is configured; promote makes it champion."""
    from specml.runtime.contract import StepContext
    from specml.runtime.steps.register import promote

    base, plan, _ = applied
    client = mlflow_client(base)
    write_demo_data(plan, base, rows=1800, seed=4)
    changes = plan_changes(plan, base)
    assert changes and changes[0].startswith("data changed (sources: customers, usage)")
    with pytest.raises(GateFailed) as failed:
        LocalTarget().apply(plan, base, ApplyOptions(quiet=True))
    [diag] = failed.value.diagnostics
    assert diag.path == ("training", "gates", "must_beat_production")
    assert "roc_auc >= champion v1 + 0.005" in diag.message and "missed by" in diag.message
    newest = sorted((base / ".specml" / "runs").iterdir())[-1]
    (report,) = (newest / "evaluate").rglob("*.json")
    champion = json.loads(report.read_text())["champion"]
    assert champion["source"] == "rescored"  # v1's graph re-scored through its named inputs
    assert [str(v.version) for v in client.search_model_versions("name='churn'")] == ["1"]
    current = base / ".specml" / "serving" / "current" / "serving.json"
    assert json.loads(current.read_text())["model_version"] == "1"
    assert load_state(base / ".specml")["status"] == "gate_failed"

    plan = plan_file(make_spec(base, lambda r: r["training"]["gates"].pop("must_beat_production")))
    result = LocalTarget().apply(plan, base, ApplyOptions(quiet=True))
    assert result.model_version == "2" and not result.promoted
    assert result.aliases == {"challenger": "2", "champion": "1"}
    assert not any(g.get("must_beat_production") for g in result.gates)
    challenger = base / ".specml" / "serving" / "challenger" / "serving.json"
    assert json.loads(challenger.read_text())["model_version"] == "2"
    assert json.loads(current.read_text())["model_version"] == "1"
    assert load_state(base / ".specml")["serving"]["challenger"]["version"] == "2"
    promote(plan, StepContext(workdir=base / ".specml", data_dir=base), "2")  # what rollout does
    assert str(client.get_model_version_by_alias("churn", "champion").version) == "2"
    assert json.loads(current.read_text())["model_version"] == "2"
    assert plan_changes(plan, base) == []


@pytest.mark.slow
def test_impossible_gate_fails_and_registers_nothing(tmp_path: Path) -> None:
    """~15 s: `specml apply` exits 3, names the gate and the miss; nothing registered or served."""
    import re

    from specml.cli.main import app
    from typer.testing import CliRunner

    def impossible(raw: dict) -> None:
        raw["training"]["gates"]["min"]["roc_auc"] = 0.999
        raw["training"]["hyperparameters"]["epochs"] = 2

    spec = make_spec(tmp_path, impossible)
    plan = plan_file(spec)
    write_demo_data(plan, tmp_path, rows=600, seed=1)
    outcome = CliRunner().invoke(app, ["apply", str(spec), "--target", "local"])
    assert outcome.exit_code == 3, outcome.output
    missed = re.search(
        r"gate failed: roc_auc >= 0\.999: roc_auc = (0\.\d+), missed by (0\.\d+)", outcome.output
    )
    assert missed, outcome.output
    assert abs(float(missed[1]) + float(missed[2]) - 0.999) < 2e-4  # value + miss = threshold
    assert "training.gates.min.roc_auc" in outcome.output  # where in the spec to look
    assert mlflow_client(tmp_path).search_registered_models() == []
    assert not (tmp_path / ".specml" / "serving").exists()
    state = load_state(tmp_path / ".specml")
    assert state["status"] == "gate_failed" and "plan" not in state
    assert (tmp_path / ".specml" / STATE_FILE).is_file()
    assert plan_changes(plan, tmp_path)[0].startswith(
        "the last apply ended with status 'gate_failed'"
    )
