"""The SageMaker Pipelines definition: steps, the gate condition, and the schema's teeth."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from sagemaker_testlib import plan_for
from specml.targets.sagemaker.pipeline_definition import (
    build_definition,
    definition_schema,
    placeholder_refs,
    validate_definition,
)

Json = dict[str, Any]


def definition(spec: str) -> Json:
    plan = plan_for(spec)
    return build_definition(plan, placeholder_refs(plan))


def steps_by_name(d: Json) -> dict[str, Json]:
    out = {}
    for step in d["Steps"]:
        out[step["Name"]] = step
        for branch in ("IfSteps", "ElseSteps"):
            for inner in step.get("Arguments", {}).get(branch, []):
                out[inner["Name"]] = inner
    return out


@pytest.mark.parametrize("spec", ["churn", "fraud", "demand"])
def test_definition_validates_against_the_schema(spec: str) -> None:
    assert definition(spec)["Version"] == "2020-12-01"
    assert validate_definition(definition(spec)) == []


def test_steps_run_the_runtime_in_the_image() -> None:
    d = definition("churn")
    top = [(s["Name"], s["Type"]) for s in d["Steps"]]
    assert top == [
        ("validate_data", "Processing"),
        ("materialize_features", "Processing"),
        ("build_training_set", "Processing"),
        ("train", "Training"),
        ("evaluate", "Processing"),
        ("gates", "Condition"),
    ]
    steps = steps_by_name(d)
    assert steps["build_training_set"]["Arguments"]["AppSpecification"]["ContainerEntrypoint"] == [
        "python",
        "-m",
        "specml.runtime",
        "build_training_set",
    ]
    # evaluate reads the Training job's model.tar.gz: unpack it, then the same runtime step.
    shell, flag, script, argv0 = steps["evaluate"]["Arguments"]["AppSpecification"][
        "ContainerEntrypoint"
    ]
    assert (shell, flag, argv0) == ("/bin/sh", "-c", "specml-evaluate")
    assert script == (
        "tar -xzf /opt/ml/processing/input/model/model.tar.gz -C "
        "/opt/ml/processing/input/model && rm /opt/ml/processing/input/model/"
        'model.tar.gz && exec python -m specml.runtime evaluate "$@"'
    )
    train = steps["train"]["Arguments"]["AlgorithmSpecification"]
    assert train["ContainerEntrypoint"][-1] == "train"
    assert train["TrainingImage"] == {"Get": "Parameters.ImageUri"}
    # The evaluate step reads the model the Training job produced.
    inputs = {
        i["InputName"]: i["S3Input"]["S3Uri"]
        for i in steps["evaluate"]["Arguments"]["ProcessingInputs"]
    }
    assert inputs["model"] == {"Get": "Steps.train.ModelArtifacts.S3ModelArtifacts"}
    assert steps["evaluate"]["PropertyFiles"] == [
        {
            "PropertyFileName": "EvaluationReport",
            "OutputName": "eval_metrics",
            "FilePath": "eval_metrics.json",
        }
    ]
    params = {p["Name"]: p.get("DefaultValue") for p in d["Parameters"]}
    assert params["TrainingInstanceType"] == "ml.m5.xlarge"


def test_gate_condition_guards_export_and_register() -> None:
    gate = steps_by_name(definition("churn"))["gates"]["Arguments"]
    assert [s["Name"] for s in gate["IfSteps"]] == [
        "export_onnx",
        "register",
        "register_model_package",
    ]
    assert [s["Type"] for s in gate["ElseSteps"]] == ["Fail"]
    register = gate["IfSteps"][1]["Arguments"]["AppSpecification"]
    assert register["ContainerEntrypoint"][2].endswith(
        'exec python -m specml.runtime register "$@"'
    )
    first = gate["Conditions"][0]
    assert first["Type"] == "GreaterThanOrEqualTo"
    assert first["RightValue"] == 0.75  # gates.min.roc_auc
    assert first["LeftValue"] == {
        "Std:JsonGet": {
            "PropertyFile": {"Get": "Steps.evaluate.PropertyFiles.EvaluationReport"},
            "Path": "metrics.roc_auc",
        }
    }
    # must_beat_production is decided by the evaluate step (it needs the registry's champion)
    # and folded into the report's gate_passed.
    assert gate["Conditions"][1] == {
        "Type": "Equals",
        "RightValue": True,
        "LeftValue": {
            "Std:JsonGet": {
                "PropertyFile": {"Get": "Steps.evaluate.PropertyFiles.EvaluationReport"},
                "Path": "gate_passed",
            }
        },
    }


@pytest.mark.parametrize("spec", ["churn", "fraud", "demand"])
def test_passing_models_become_versions_in_the_model_package_group(spec: str) -> None:
    plan = plan_for(spec)
    d = build_definition(plan, placeholder_refs(plan))
    gate = steps_by_name(d)["gates"]["Arguments"]
    package = gate["IfSteps"][-1]  # behind the gate: a failing model never becomes a package
    assert package["Type"] == "RegisterModel"
    assert package["DependsOn"] == ["register"]  # after MLflow has the lineage
    args = package["Arguments"]
    from specml.targets.sagemaker.naming import Names, container_environment

    assert args["ModelPackageGroupName"] == Names.for_plan(plan).model_package_group
    assert args["ModelApprovalStatus"] == "PendingManualApproval"
    (container,) = args["InferenceSpecification"]["Containers"]
    assert container["Image"] == {"Get": "Parameters.ImageUri"}
    # The same folder the endpoint serves (uncompressed prefix) and the same environment.
    assert container["ModelDataSource"]["S3DataSource"] == {
        "S3Uri": {
            "Std:Join": {
                "On": "/",
                "Values": [
                    {
                        "Get": "Steps.export_onnx.ProcessingOutputConfig.Outputs['onnx_model']"
                        ".S3Output.S3Uri"
                    },
                    "",
                ],
            }
        },
        "S3DataType": "S3Prefix",
        "CompressionType": "None",
    }
    assert container["Environment"] == container_environment(plan)
    assert args["InferenceSpecification"]["SupportedRealtimeInferenceInstanceTypes"] == [
        plan.targets.sagemaker.instance_type
    ]
    stats = args["ModelMetrics"]["ModelQuality"]["Statistics"]
    assert stats["S3Uri"]["Std:Join"]["Values"] == [
        {"Get": "Steps.evaluate.ProcessingOutputConfig.Outputs['eval_metrics'].S3Output.S3Uri"},
        "eval_metrics.json",
    ]
    assert args["CustomerMetadataProperties"]["specml_spec_hash"] == plan.spec_hash


def test_max_gates_become_less_than_or_equal_conditions() -> None:
    gate = steps_by_name(definition("demand"))["gates"]["Arguments"]
    got = {
        (c["Type"], c["LeftValue"]["Std:JsonGet"]["Path"], c["RightValue"])
        for c in gate["Conditions"]
    }
    assert got == {
        ("GreaterThanOrEqualTo", "metrics.r2", 0.5),
        ("LessThanOrEqualTo", "metrics.mape", 0.35),
        ("LessThanOrEqualTo", "metrics.rmse", 25.0),
    }


def test_kms_key_reaches_every_job_when_the_spec_has_one() -> None:
    steps = steps_by_name(definition("fraud"))
    assert (
        steps["validate_data"]["Arguments"]["ProcessingOutputConfig"]["KmsKeyId"] == "${KmsKeyArn}"
    )
    assert steps["train"]["Arguments"]["OutputDataConfig"]["KmsKeyId"] == "${KmsKeyArn}"
    assert (
        "KmsKeyId"
        not in steps_by_name(definition("churn"))["train"]["Arguments"]["OutputDataConfig"]
    )


def _set(path: str, value: Any) -> Callable[[Json], None]:
    def mutate(d: Json) -> None:
        node: Any = d
        *parents, last = path.split("/")
        for p in parents:
            node = node[int(p)] if p.isdigit() else node[p]
        if value is _DELETE:
            del node[int(last) if last.isdigit() else last]
        else:
            node[int(last) if last.isdigit() else last] = value

    return mutate


_DELETE = object()
MUTATIONS = {
    "wrong version": _set("Version", "2021-01-01"),
    "processing step without a role": _set("Steps/0/Arguments/RoleArn", _DELETE),
    "processing step without an image": _set(
        "Steps/0/Arguments/AppSpecification/ImageUri", _DELETE
    ),
    "unknown step type": _set("Steps/0/Type", "Notebook"),
    "step name with spaces": _set("Steps/0/Name", "validate data"),
    "unknown condition type": _set("Steps/5/Arguments/Conditions/0/Type", "RoughlyEqual"),
    "condition step without else": _set("Steps/5/Arguments/ElseSteps", _DELETE),
    "training without stopping condition": _set("Steps/3/Arguments/StoppingCondition", _DELETE),
    "typo in an argument": _set("Steps/0/Arguments/ProcessingInput", []),
    "string parameter with a number default": _set("Parameters/0/DefaultValue", 3),
    "retry with zero attempts": _set("Steps/0/RetryPolicies/0/MaxAttempts", 0),
    "JsonGet without a path": _set(
        "Steps/5/Arguments/Conditions/0/LeftValue/Std:JsonGet/Path", _DELETE
    ),
    "reference to an unknown step": _set(
        "Steps/4/Arguments/ProcessingInputs/2/S3Input/S3Uri",
        {"Get": "Steps.trian.ModelArtifacts.S3ModelArtifacts"},
    ),
    "reference to an unknown parameter": _set(
        "Steps/3/Arguments/ResourceConfig/InstanceType", {"Get": "Parameters.GpuType"}
    ),
    "DependsOn an unknown step": _set("Steps/1/DependsOn", ["validate"]),
    "JsonGet of an unknown property file": _set(
        "Steps/5/Arguments/Conditions/0/LeftValue/Std:JsonGet/PropertyFile",
        {"Get": "Steps.evaluate.PropertyFiles.Report"},
    ),
    "duplicate step names": _set("Steps/1/Name", "validate_data"),
    "metadata value that is not a string": _set("Metadata/specml_system", {"name": "churn"}),
    "model package without containers": _set(
        "Steps/5/Arguments/IfSteps/2/Arguments/InferenceSpecification/Containers", []
    ),
    "model package with an unknown approval status": _set(
        "Steps/5/Arguments/IfSteps/2/Arguments/ModelApprovalStatus", "Approve"
    ),
    "model package with an unknown S3 data type": _set(
        "Steps/5/Arguments/IfSteps/2/Arguments/InferenceSpecification/Containers/0/"
        "ModelDataSource/S3DataSource/S3DataType",
        "S3Folder",
    ),
    "model package metrics from an unknown step": _set(
        "Steps/5/Arguments/IfSteps/2/Arguments/ModelMetrics/ModelQuality/Statistics/S3Uri",
        {"Get": "Steps.evaluation.ProcessingOutputConfig.Outputs['eval_metrics'].S3Output.S3Uri"},
    ),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_invalid_definitions_fail_validation(mutation: str) -> None:
    d = copy.deepcopy(definition("churn"))
    MUTATIONS[mutation](d)
    assert validate_definition(d), f"'{mutation}' was accepted"


def test_schema_is_a_closed_2020_12_schema() -> None:
    schema = definition_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["properties"]["Version"] == {"const": "2020-12-01"}
    assert schema["additionalProperties"] is False
    assert json.loads(json.dumps(schema)) == schema


def test_steps_are_told_the_names_the_program_gives_resources() -> None:
    from specml.targets.sagemaker.features import feature_group_specs

    steps = steps_by_name(definition("churn"))
    env = steps["materialize_features"]["Arguments"]["Environment"]
    assert json.loads(env["SPECML_FEATURE_GROUPS"]) == {
        g.view_id: g.name for g in feature_group_specs(plan_for("churn"))
    }
    register = steps["register"]["Arguments"]
    assert register["Environment"]["SPECML_MODEL_PACKAGE_GROUP"] == "churn"
    # The ONNX export is the served version: models/<registry>/<execution id>/.
    (out,) = steps["export_onnx"]["Arguments"]["ProcessingOutputConfig"]["Outputs"]
    assert out["S3Output"]["S3Uri"] == {
        "Std:Join": {
            "On": "/",
            "Values": [
                "s3://${ArtifactBucket}/models/churn",
                {"Get": "Execution.PipelineExecutionId"},
            ],
        }
    }


def _runtime_args(step: Json) -> tuple[str, list[str]]:
    args = step["Arguments"]
    spec = args.get("AppSpecification") or args["AlgorithmSpecification"]
    entry = spec["ContainerEntrypoint"]
    kind = entry[-1] if entry[0] == "python" else entry[2].split("specml.runtime ")[1].split()[0]
    return kind, spec["ContainerArguments"]


@pytest.mark.parametrize("spec", ["churn", "fraud", "demand"])
def test_container_arguments_follow_the_runtime_contract(
    spec: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The runtime's own CLI parses every step's arguments; artifacts sit where SageMaker puts
    them: a Metrics/Dataset file inside the folder it uploads or downloads, a folder otherwise."""
    from specml.runtime.__main__ import main

    plan = plan_for(spec)
    types = {f"{s.name}.{o.name}": o.type for s in plan.steps for o in s.outputs}
    for name, step in steps_by_name(definition(spec)).items():
        if step["Type"] not in ("Processing", "Training"):
            continue
        kind, argv = _runtime_args(step)
        ir = plan.step(name)
        assert kind == ir.kind
        # argparse accepts them (a usage error would raise SystemExit); the Plan file only
        # exists inside the job, so the step then stops with "cannot read plan".
        assert main([kind, *argv]) == 2
        assert "cannot read plan /opt/ml/" in capsys.readouterr().err
        pairs = [
            argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a in ("--input", "--output")
        ]
        got = {n: p for n, p in pairs}
        assert set(got) == set(ir.inputs) | {o.name for o in ir.outputs}
        for input_name, ref in ir.inputs.items():
            produced = ref.split(".", 1)[1]
            suffix = {"Metrics": f"/{produced}.json", "Dataset": f"/{produced}.parquet"}.get(
                types[ref], ""
            )
            assert got[input_name].endswith(f"/{input_name}{suffix}"), (name, got[input_name])
        for out in ir.outputs:
            suffix = {"Metrics": f"/{out.name}.json", "Dataset": f"/{out.name}.parquet"}.get(
                out.type, ""
            )
            assert got[out.name].endswith(suffix), (name, got[out.name])
            if step["Type"] == "Processing":
                (folder,) = [
                    o["S3Output"]["LocalPath"]
                    for o in step["Arguments"]["ProcessingOutputConfig"]["Outputs"]
                    if o["OutputName"] == out.name
                ]
                assert got[out.name] == folder + suffix
