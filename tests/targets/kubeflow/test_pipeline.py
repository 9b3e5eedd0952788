"""pipeline.yaml: loads with kfp's own loader, is a PipelineSpec, and mirrors the Plan's DAG."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kubeflow_testlib import (
    GOLDEN_SPECS,
    pipeline_dict,
    pipeline_proto,
    plan_for,
    plan_graph,
    rendered,
    task_graph,
)
from specml.compiler.errors import TargetError
from specml.compiler.ir import Plan
from specml.targets.kubeflow.components import component_source
from specml.targets.kubeflow.pipeline import build_pipeline, step_retries


def _executor(spec: dict, step: str) -> dict:
    return spec["deploymentSpec"]["executors"][f"exec-{step.replace('_', '-')}"]["container"]


def _task(spec: dict, step: str) -> dict:
    key = step.replace("_", "-")
    root = spec["root"]["dag"]["tasks"]
    if key in root:
        return root[key]
    return spec["components"]["comp-condition-1"]["dag"]["tasks"][key]


@pytest.mark.parametrize("name", GOLDEN_SPECS)
def test_loads_with_kfp_loader_and_as_pipeline_spec_proto(name: str, tmp_path: Path) -> None:
    from kfp import components

    path = tmp_path / "pipeline.yaml"
    path.write_text(rendered(name)["pipeline.yaml"])
    loaded = components.load_component_from_file(str(path))
    plan = plan_for(name)
    assert loaded.name == plan.system.name
    assert set(loaded.component_spec.inputs) == {"plan_json", "workdir", "data_dir", "tracking_uri"}
    proto = pipeline_proto(path.read_text())
    assert proto.pipeline_info.name == plan.system.name
    assert proto.schema_version == "2.1.0"
    # one executor per step, every one a lightweight python component on the spec's image
    executors = proto.deployment_spec["executors"]
    assert len(executors) == len(plan.steps)
    for step in plan.steps:
        container = _executor(pipeline_dict(path.read_text()), step.name)
        assert container["image"] == plan.targets.kubeflow.image
        assert "kfp.dsl.executor_main" in " ".join(container["command"])
        assert "pip install" not in " ".join(container["command"] + container["args"])
        assert f"run_step(\n        {step.kind!r}" in container["command"][-1]


@pytest.mark.parametrize("name", GOLDEN_SPECS)
def test_task_graph_equals_the_plan_dag_and_gate_wraps_export_and_register(name: str) -> None:
    plan = plan_for(name)
    spec = pipeline_dict(rendered(name)["pipeline.yaml"])
    graph, gated = task_graph(spec)
    assert graph == plan_graph(plan)
    assert gated == {s.name for s in plan.steps if s.condition == "gate_passed"}
    assert gated == {"export_onnx", "register"}
    condition = spec["root"]["dag"]["tasks"]["condition-1"]
    # The gate is evaluate's single return value (KFP key `Output`): kfp.local 2.17's condition
    # evaluator resolves only `pipelinechannel--<task>-Output` channels (see components.py).
    params = condition["inputs"]["parameters"]["pipelinechannel--evaluate-Output"]
    assert params["taskOutputParameter"] == {
        "outputParameterKey": "Output",
        "producerTask": "evaluate",
    }
    assert condition["triggerPolicy"]["condition"] == (
        "inputs.parameter_values['pipelinechannel--evaluate-Output'] == true"
    )
    assert spec["components"]["comp-evaluate"]["outputDefinitions"]["parameters"] == {
        "Output": {"parameterType": "BOOLEAN"}
    }
    for step in plan.steps:  # no other step returns a parameter
        if step.kind != "evaluate":
            comp = spec["components"][f"comp-{step.name.replace('_', '-')}"]
            assert "parameters" not in comp.get("outputDefinitions", {}), step.name


@pytest.mark.parametrize("name", GOLDEN_SPECS)
def test_artifact_types_match_the_ir(name: str) -> None:
    plan = plan_for(name)
    spec = pipeline_dict(rendered(name)["pipeline.yaml"])
    for step in plan.steps:
        comp = spec["components"][f"comp-{step.name.replace('_', '-')}"]
        outs = comp.get("outputDefinitions", {}).get("artifacts", {})
        assert {k: v["artifactType"]["schemaTitle"] for k, v in outs.items()} == {
            a.name: f"system.{a.type}" for a in step.outputs
        }
        ins = comp["inputDefinitions"].get("artifacts", {})
        assert set(ins) == set(step.inputs)


@pytest.mark.parametrize("name", GOLDEN_SPECS)
def test_caching_and_retries_follow_the_steps(name: str) -> None:
    plan = plan_for(name)
    spec = pipeline_dict(rendered(name)["pipeline.yaml"])
    for step in plan.steps:
        task = _task(spec, step.name)
        assert task["cachingOptions"].get("enableCache", False) is step.cacheable, step.name
        retries = step_retries(plan, step)
        assert retries == max(step.retries, plan.targets.kubeflow.retries)
        assert task.get("retryPolicy", {}).get("maxRetryCount", 0) == retries, step.name


def test_fraud_trains_on_a_gpu_with_its_resources() -> None:
    spec = pipeline_dict(rendered("fraud")["pipeline.yaml"])
    res = _executor(spec, "train")["resources"]
    assert res["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert res["accelerator"]["resourceCount"] == "1"
    assert res["resourceCpuRequest"] == res["resourceCpuLimit"] == "8"
    assert res["resourceMemoryRequest"] == res["resourceMemoryLimit"] == "32Gi"
    assert "resources" not in _executor(spec, "evaluate"), "only train asks for resources"
    churn = pipeline_dict(rendered("churn")["pipeline.yaml"])
    assert "accelerator" not in _executor(churn, "train").get("resources", {})


def test_plan_json_default_is_the_plan() -> None:
    plan = plan_for("fraud")
    spec = pipeline_dict(rendered("fraud")["pipeline.yaml"])
    default = spec["root"]["inputDefinitions"]["parameters"]["plan_json"]["defaultValue"]
    assert Plan.from_json(default) == plan
    assert "\n" not in default
    workdir = spec["root"]["inputDefinitions"]["parameters"]["workdir"]["defaultValue"]
    assert workdir == "/tmp/specml/fraud-scorer"
    assert json.loads(default)["spec_hash"] == plan.spec_hash


def test_component_source_is_a_thin_shell_around_run_step() -> None:
    plan = plan_for("churn")
    source = component_source(plan, plan.step("evaluate"))
    compile(source, "<evaluate>", "exec")
    assert "def evaluate(" in source
    assert "model: Input[Model]" in source and "eval_metrics: Output[Metrics]" in source
    assert "from specml.runtime import StepContext, run_step" in source
    assert ") -> bool:" in source  # the gate leaves as the single `Output`, not a NamedTuple
    assert "return bool(result.values['gate_passed'])" in source
    assert "NamedTuple" not in source
    train = component_source(plan, plan.step("train"))
    assert ") -> bool:" not in train and "return " not in train


def test_a_step_consuming_a_gated_step_outside_the_gate_is_refused() -> None:
    plan = plan_for("churn")
    steps = list(plan.steps)
    extra = plan.step("validate_data").model_copy(
        update={"name": "report", "depends_on": ("register",), "inputs": {}}
    )
    broken = plan.model_copy(update={"steps": (*steps, extra)})
    with pytest.raises(TargetError, match="depends on gated step"):
        build_pipeline(broken)


def test_demand_trains_on_cpu_with_its_resources() -> None:
    spec = pipeline_dict(rendered("demand")["pipeline.yaml"])
    res = _executor(spec, "train")["resources"]
    assert "accelerator" not in res
    assert res["resourceCpuRequest"] == res["resourceCpuLimit"] == "2"
    assert res["resourceMemoryRequest"] == res["resourceMemoryLimit"] == "4Gi"
    assert _task(spec, "train")["cachingOptions"] == {"enableCache": True}
