"""The SageMaker Pipelines definition (schema version 2020-12-01) for the Plan's step DAG.

Every step runs `python -m specml.runtime <kind> ...` in the spec's image: `train` as a
Training job, the rest as Processing jobs. The evaluate step publishes its report as a
property file; a Condition step checks the Plan's gates on it (JsonGet) and guards the
gated steps (export, register), with a Fail step when a gate does not hold. Behind the gate, a
native RegisterModel step also records the ONNX export as a version in the system's SageMaker
model package group (pending manual approval, with the evaluation report as its model metrics),
so the SageMaker Model Registry lists every version that passed the gates.

Artifacts follow the runtime contract (as the local target lays them out): a Metrics output is
a JSON file, a Dataset a parquet file, Model/Artifact outputs folders. SageMaker moves folders,
so each artifact lives in a folder named after it and the step gets the file inside it. A
Training job uploads its model folder as `model.tar.gz`; steps reading it unpack it first.
The ONNX export is written to `models/<registry>/<execution id>/`, the folder the endpoint serves.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from specml.compiler.ir import ArtifactType, Plan, Step
from specml.targets.sagemaker.naming import SYSTEM_TAG, Names, container_environment

VERSION = "2020-12-01"
EVAL_PROPERTY_FILE = "EvaluationReport"
EVAL_OUTPUT = "eval_metrics"  # the evaluate step's report: {"metrics": {...}, "gate_passed": ...}
EVAL_REPORT_FILE = f"{EVAL_OUTPUT}.json"  # a Metrics artifact is NAME.json in its folder
SERVED_KIND = "export_onnx"  # its output is what the endpoint serves (model.onnx + serving.json)
GATE_STEP = "gates"
PACKAGE_STEP = "register_model_package"  # the native RegisterModel step
PACKAGE_APPROVAL = "PendingManualApproval"
FAIL_STEP = "gate_failed"
PROCESSING_INSTANCE_TYPE = "ml.m5.xlarge"
DATA_STEPS = frozenset({"validate_data", "materialize_features", "build_training_set"})
MAX_RUNTIME_S = {"train": 4 * 3600}
DEFAULT_MAX_RUNTIME_S = 3600
VOLUME_GB = 30
PLAN_KEY = "specml/plan/plan.json"  # where the program uploads the Plan in the artifact bucket

_PROC = "/opt/ml/processing"
Json = dict[str, Any]


@dataclass(frozen=True)
class DeployRefs:
    """Values only known at deploy time; the emitted file shows them as ${...} placeholders."""

    bucket: str
    role_arn: str
    image_uri: str
    kms_key_id: str | None


def placeholder_refs(plan: Plan) -> DeployRefs:
    """The references as they appear in the reviewed pipeline_definition.json."""
    sm = plan.targets.sagemaker
    return DeployRefs(
        bucket="${ArtifactBucket}",
        role_arn="${ExecutionRoleArn}",
        image_uri=(sm.image if sm and sm.image else "${ImageUri}"),
        kms_key_id="${KmsKeyArn}" if sm and sm.kms_key else None,
    )


def _get(path: str) -> Json:
    return {"Get": path}


def _join(*values: Any) -> Json:
    return {"Std:Join": {"On": "/", "Values": list(values)}}


def _run_uri(refs: DeployRefs, step: str, output: str) -> Json:
    return _join(f"s3://{refs.bucket}/runs", _get("Execution.PipelineExecutionId"), step, output)


def _source_uri(plan: Plan, ref: str) -> Json:
    """The S3 location of `producer.output`, as a property reference to the producer step."""
    producer, output = ref.split(".", 1)
    if plan.step(producer).kind == "train":
        if output == "model":
            return _get(f"Steps.{producer}.ModelArtifacts.S3ModelArtifacts")
        return _get(f"Steps.{producer}.OutputDataConfig.S3OutputPath")
    return _get(f"Steps.{producer}.ProcessingOutputConfig.Outputs['{output}'].S3Output.S3Uri")


def _artifact_type(plan: Plan, ref: str) -> ArtifactType:
    producer, output = ref.split(".", 1)
    return next(o.type for o in plan.step(producer).outputs if o.name == output)


def _artifact_path(folder: str, name: str, kind: ArtifactType) -> str:
    """The path a step reads/writes inside an artifact's folder (runtime contract)."""
    if kind == "Metrics":
        return f"{folder}/{name}.json"
    if kind == "Dataset":
        return f"{folder}/{name}.parquet"
    return folder


def _is_packed(plan: Plan, ref: str) -> bool:
    """A Training job's model: SageMaker hands it on as model.tar.gz."""
    return plan.step(ref.split(".", 1)[0]).kind == "train" and _artifact_type(plan, ref) == "Model"


def _entrypoint(plan: Plan, step: Step, local: dict[str, str]) -> list[str]:
    """`python -m specml.runtime KIND`, unpacking Training model tarballs first if needed."""
    packed = [local[name] for name, ref in sorted(step.inputs.items()) if _is_packed(plan, ref)]
    if not packed:
        return ["python", "-m", "specml.runtime", step.kind]
    unpack = " && ".join(f"tar -xzf {d}/model.tar.gz -C {d} && rm {d}/model.tar.gz" for d in packed)
    return [
        "/bin/sh",
        "-c",
        f'{unpack} && exec python -m specml.runtime {step.kind} "$@"',
        f"specml-{step.kind}",
    ]


def _retry(step: Step) -> list[Json]:
    if step.retries <= 0:
        return []
    return [
        {
            "ExceptionType": ["SageMaker.JOB_INTERNAL_ERROR", "SageMaker.CAPACITY_ERROR"],
            "IntervalSeconds": 60,
            "BackoffRate": 2.0,
            "MaxAttempts": min(step.retries, 20),
        }
    ]


def _s3_input(name: str, uri: Any, local: str) -> Json:
    return {
        "InputName": name,
        "AppManaged": False,
        "S3Input": {
            "S3Uri": uri,
            "LocalPath": local,
            "S3DataType": "S3Prefix",
            "S3InputMode": "File",
            "S3DataDistributionType": "FullyReplicated",
        },
    }


def _plan_uri(refs: DeployRefs) -> str:
    return f"s3://{refs.bucket}/{PLAN_KEY.rsplit('/', 1)[0]}"


def _output_uri(plan: Plan, step: Step, output: str, refs: DeployRefs) -> Json:
    """Run-scoped, except the served model: models/<registry>/<execution id>/ (a version)."""
    if step.kind == SERVED_KIND:
        return _join(
            f"s3://{refs.bucket}/models/{plan.registry.name}", _get("Execution.PipelineExecutionId")
        )
    return _run_uri(refs, step.name, output)


def _environment(plan: Plan, step: Step) -> dict[str, str]:
    """Where a step finds this system's SageMaker resources (names are fixed by the Plan)."""
    names = Names.for_plan(plan)
    env = {
        "SPECML_SYSTEM": plan.system.name,
        "SPECML_STEP": step.name,
        "SPECML_TARGET": "sagemaker",
    }
    if step.kind in ("materialize_features", "build_training_set"):
        env["SPECML_FEATURE_GROUPS"] = json.dumps(
            {v.id: names.feature_group(v.id) for v in plan.features.views}, sort_keys=True
        )
    if step.kind == "register":
        env["SPECML_MODEL_PACKAGE_GROUP"] = names.model_package_group
    return env


def _processing_step(plan: Plan, step: Step, refs: DeployRefs) -> Json:
    inputs = [_s3_input("plan", _plan_uri(refs), f"{_PROC}/plan")]
    args = ["--plan", f"{_PROC}/plan/plan.json", "--workdir", f"{_PROC}/work"]
    if step.kind in DATA_STEPS:
        inputs.append(_s3_input("data", _get("Parameters.DataUri"), f"{_PROC}/data"))
    args += ["--data-dir", f"{_PROC}/data"]
    local = {name: f"{_PROC}/input/{name}" for name in step.inputs}
    for name, ref in sorted(step.inputs.items()):
        inputs.append(_s3_input(name, _source_uri(plan, ref), local[name]))
        file = _artifact_path(local[name], ref.split(".", 1)[1], _artifact_type(plan, ref))
        args += ["--input", f"{name}={file}"]
    outputs = []
    for out in step.outputs:
        folder = f"{_PROC}/output/{out.name}"
        outputs.append(
            {
                "OutputName": out.name,
                "AppManaged": False,
                "S3Output": {
                    "S3Uri": _output_uri(plan, step, out.name, refs),
                    "LocalPath": folder,
                    "S3UploadMode": "EndOfJob",
                },
            }
        )
        args += ["--output", f"{out.name}={_artifact_path(folder, out.name, out.type)}"]
    cluster: Json = {
        "InstanceCount": 1,
        "InstanceType": _get("Parameters.ProcessingInstanceType"),
        "VolumeSizeInGB": VOLUME_GB,
    }
    output_config: Json = {"Outputs": outputs}
    if refs.kms_key_id:
        cluster["VolumeKmsKeyId"] = refs.kms_key_id
        output_config["KmsKeyId"] = refs.kms_key_id
    body: Json = {
        "Name": step.name,
        "Type": "Processing",
        "Arguments": {
            "ProcessingResources": {"ClusterConfig": cluster},
            "AppSpecification": {
                "ImageUri": _get("Parameters.ImageUri"),
                "ContainerEntrypoint": _entrypoint(plan, step, local),
                "ContainerArguments": args,
            },
            "RoleArn": refs.role_arn,
            "ProcessingInputs": inputs,
            "ProcessingOutputConfig": output_config,
            "StoppingCondition": {
                "MaxRuntimeInSeconds": MAX_RUNTIME_S.get(step.kind, DEFAULT_MAX_RUNTIME_S)
            },
            "Environment": _environment(plan, step),
            "Tags": [{"Key": SYSTEM_TAG, "Value": plan.system.name}],
        },
    }
    if step.kind == "evaluate":
        body["PropertyFiles"] = [
            {
                "PropertyFileName": EVAL_PROPERTY_FILE,
                "OutputName": EVAL_OUTPUT,
                "FilePath": EVAL_REPORT_FILE,
            }
        ]
    return body


def _training_step(plan: Plan, step: Step, refs: DeployRefs) -> Json:
    channels = [
        {
            "ChannelName": "plan",
            "DataSource": {
                "S3DataSource": {
                    "S3DataType": "S3Prefix",
                    "S3Uri": _plan_uri(refs),
                    "S3DataDistributionType": "FullyReplicated",
                }
            },
        }
    ]
    args = [
        "--plan",
        "/opt/ml/input/data/plan/plan.json",
        "--workdir",
        "/opt/ml/output/work",
        "--data-dir",
        "/opt/ml/input/data",
    ]
    for name, ref in sorted(step.inputs.items()):
        channels.append(
            {
                "ChannelName": name,
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": _source_uri(plan, ref),
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
            }
        )
        file = _artifact_path(
            f"/opt/ml/input/data/{name}", ref.split(".", 1)[1], _artifact_type(plan, ref)
        )
        args += ["--input", f"{name}={file}"]
    for out in step.outputs:
        # SageMaker uploads /opt/ml/model as model.tar.gz and /opt/ml/output/data as output.tar.gz.
        folder = "/opt/ml/model" if out.type == "Model" else f"/opt/ml/output/data/{out.name}"
        args += ["--output", f"{out.name}={_artifact_path(folder, out.name, out.type)}"]
    resource: Json = {
        "InstanceCount": 1,
        "InstanceType": _get("Parameters.TrainingInstanceType"),
        "VolumeSizeInGB": VOLUME_GB,
    }
    output_config: Json = {"S3OutputPath": _run_uri(refs, step.name, "output")}
    if refs.kms_key_id:
        resource["VolumeKmsKeyId"] = refs.kms_key_id
        output_config["KmsKeyId"] = refs.kms_key_id
    return {
        "Name": step.name,
        "Type": "Training",
        "Arguments": {
            "AlgorithmSpecification": {
                "TrainingImage": _get("Parameters.ImageUri"),
                "TrainingInputMode": "File",
                "ContainerEntrypoint": ["python", "-m", "specml.runtime", step.kind],
                "ContainerArguments": args,
            },
            "InputDataConfig": channels,
            "OutputDataConfig": output_config,
            "ResourceConfig": resource,
            "RoleArn": refs.role_arn,
            "StoppingCondition": {
                "MaxRuntimeInSeconds": MAX_RUNTIME_S.get(step.kind, DEFAULT_MAX_RUNTIME_S)
            },
            "Environment": _environment(plan, step),
            "Tags": [{"Key": SYSTEM_TAG, "Value": plan.system.name}],
        },
    }


def _job_step(plan: Plan, step: Step, refs: DeployRefs) -> Json:
    body = (_training_step if step.kind == "train" else _processing_step)(plan, step, refs)
    # Data references already order most steps; DependsOn keeps the Plan's explicit edges.
    if step.depends_on:
        body["DependsOn"] = list(step.depends_on)
    retry = _retry(step)
    if retry:
        body["RetryPolicies"] = retry
    return body


def _report_value(evaluate: str, path: str) -> Json:
    return {
        "Std:JsonGet": {
            "PropertyFile": _get(f"Steps.{evaluate}.PropertyFiles.{EVAL_PROPERTY_FILE}"),
            "Path": path,
        }
    }


def _conditions(plan: Plan) -> list[Json]:
    evaluate = next(s.name for s in plan.steps if s.kind == "evaluate")
    conds: list[Json] = []
    for gate in plan.evaluation.gates:
        conds.append(
            {
                "Type": "GreaterThanOrEqualTo" if gate.op == ">=" else "LessThanOrEqualTo",
                "LeftValue": _report_value(evaluate, f"metrics.{gate.metric}"),
                "RightValue": gate.threshold,
            }
        )
    if plan.evaluation.must_beat_production is not None:
        # The champion's metric lives in the registry: the evaluate step compares, adds that
        # gate to its report, and `gate_passed` is true only when every gate (it too) holds.
        conds.append(
            {
                "Type": "Equals",
                "LeftValue": _report_value(evaluate, "gate_passed"),
                "RightValue": True,
            }
        )
    return conds


def _package_step(plan: Plan, refs: DeployRefs) -> Json | None:
    """A RegisterModel step: the served export as a model package version (CreateModelPackage)."""
    served = next((s for s in plan.steps if s.kind == SERVED_KIND), None)
    if served is None or not served.outputs:
        return None
    sm = plan.targets.sagemaker
    after = [s.name for s in plan.steps if s.kind == "register"] or [served.name]
    # The export folder (model.onnx + serving.json), uncompressed: the trailing '/' marks a prefix.
    model_prefix = _join(_source_uri(plan, f"{served.name}.{served.outputs[0].name}"), "")
    arguments: Json = {
        "ModelPackageGroupName": Names.for_plan(plan).model_package_group,
        "ModelPackageDescription": (
            f"{plan.system.name}: model {plan.registry.name}, evaluation gates passed"
        ),
        "ModelApprovalStatus": PACKAGE_APPROVAL,
        "InferenceSpecification": {
            "Containers": [
                {
                    "Image": _get("Parameters.ImageUri"),
                    "ModelDataSource": {
                        "S3DataSource": {
                            "S3Uri": model_prefix,
                            "S3DataType": "S3Prefix",
                            "CompressionType": "None",
                        }
                    },
                    "Environment": container_environment(plan),
                }
            ],
            "SupportedContentTypes": ["application/json"],
            "SupportedResponseMIMETypes": ["application/json"],
            "SupportedRealtimeInferenceInstanceTypes": [
                sm.instance_type if sm else PROCESSING_INSTANCE_TYPE
            ],
        },
        "CustomerMetadataProperties": {
            "specml_system": plan.system.name,
            "specml_spec_hash": plan.spec_hash,
            "specml_registry": plan.registry.name,
        },
        "Tags": [{"Key": SYSTEM_TAG, "Value": plan.system.name}],
    }
    evaluate = next((s for s in plan.steps if s.kind == "evaluate"), None)
    if evaluate is not None and any(o.name == EVAL_OUTPUT for o in evaluate.outputs):
        report = _join(_source_uri(plan, f"{evaluate.name}.{EVAL_OUTPUT}"), EVAL_REPORT_FILE)
        arguments["ModelMetrics"] = {
            "ModelQuality": {"Statistics": {"ContentType": "application/json", "S3Uri": report}}
        }
    return {
        "Name": PACKAGE_STEP,
        "Type": "RegisterModel",
        "DependsOn": after,
        "Arguments": arguments,
    }


def build_definition(plan: Plan, refs: DeployRefs) -> Json:
    """The pipeline definition as a dict (serialise with `definition_json`)."""
    sm = plan.targets.sagemaker
    names = Names.for_plan(plan)
    ungated = [s for s in plan.steps if s.condition is None]
    gated = [s for s in plan.steps if s.condition == "gate_passed"]
    steps = [_job_step(plan, s, refs) for s in ungated]
    package = _package_step(plan, refs)
    conditions = _conditions(plan) if gated else []
    if not gated or not conditions:  # nothing to check: the gated steps simply run
        steps += [_job_step(plan, s, refs) for s in gated] + ([package] if package else [])
    else:
        gate_list = ", ".join(f"{g.metric} {g.op} {g.threshold:g}" for g in plan.evaluation.gates)
        steps.append(
            {
                "Name": GATE_STEP,
                "Type": "Condition",
                "Arguments": {
                    "Conditions": conditions,
                    "IfSteps": [_job_step(plan, s, refs) for s in gated]
                    + ([package] if package else []),
                    "ElseSteps": [
                        {
                            "Name": FAIL_STEP,
                            "Type": "Fail",
                            "Arguments": {
                                "ErrorMessage": f"{plan.system.name}: evaluation gates not met ({gate_list})",
                            },
                        }
                    ],
                },
            }
        )
    return {
        "Version": VERSION,
        # Metadata values are plain strings in the definition schema AWS publishes.
        "Metadata": {
            "specml_system": plan.system.name,
            "specml_spec_hash": plan.spec_hash,
            "specml_pipeline": names.pipeline,
        },
        "Parameters": [
            {"Name": "ImageUri", "Type": "String", "DefaultValue": refs.image_uri},
            {"Name": "DataUri", "Type": "String", "DefaultValue": f"s3://{refs.bucket}/data"},
            {
                "Name": "ProcessingInstanceType",
                "Type": "String",
                "DefaultValue": PROCESSING_INSTANCE_TYPE,
            },
            {
                "Name": "TrainingInstanceType",
                "Type": "String",
                "DefaultValue": sm.training_instance_type if sm else "ml.m5.xlarge",
            },
        ],
        "PipelineExperimentConfig": {
            "ExperimentName": _get("Execution.PipelineName"),
            "TrialName": _get("Execution.PipelineExecutionId"),
        },
        "Steps": steps,
    }


def definition_json(definition: Json) -> str:
    """Canonical text: sorted keys, two-space indent, trailing newline."""
    return json.dumps(definition, sort_keys=True, indent=2) + "\n"


@lru_cache(maxsize=1)
def definition_schema() -> Json:
    """The JSON Schema (schemas/pipeline_definition.schema.json) the definition must satisfy."""
    text = (
        resources.files("specml.targets.sagemaker.schemas")
        .joinpath("pipeline_definition.schema.json")
        .read_text()
    )
    return json.loads(text)


def _walk_steps(steps: list[Json]) -> list[Json]:
    out: list[Json] = []
    for step in steps:
        out.append(step)
        if step.get("Type") == "Condition":
            args = step.get("Arguments", {})
            out += _walk_steps(args.get("IfSteps", [])) + _walk_steps(args.get("ElseSteps", []))
    return out


def _gets(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["Get"]] if isinstance(node.get("Get"), str) else []
        return found + [g for v in node.values() for g in _gets(v)]
    if isinstance(node, list):
        return [g for v in node for g in _gets(v)]
    return []


def validate_definition(definition: Json) -> list[str]:
    """Schema errors plus dangling references (steps, parameters, property files); [] if valid."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(definition_schema())
    errors = [
        f"{'/'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
        for e in sorted(validator.iter_errors(definition), key=lambda e: list(map(str, e.path)))
    ]
    if errors:
        return errors
    steps = _walk_steps(definition["Steps"])
    names = [s["Name"] for s in steps]
    errors += [
        f"duplicate step name '{n}'" for n in sorted({n for n in names if names.count(n) > 1})
    ]
    params = {p["Name"] for p in definition.get("Parameters", [])}
    files = {(s["Name"], f["PropertyFileName"]) for s in steps for f in s.get("PropertyFiles", [])}
    for step in steps:
        errors += [
            f"{step['Name']}: DependsOn unknown step '{d}'"
            for d in step.get("DependsOn", [])
            if d not in names
        ]
        for ref in _gets(step):
            head, _, rest = ref.partition(".")
            if head == "Parameters" and rest not in params:
                errors.append(f"{step['Name']}: unknown parameter '{rest}'")
            elif head == "Steps":
                target, _, prop = rest.partition(".")
                if target not in names:
                    errors.append(f"{step['Name']}: reference to unknown step '{target}'")
                elif (
                    prop.startswith("PropertyFiles.")
                    and (target, prop.split(".", 1)[1]) not in files
                ):
                    errors.append(f"{step['Name']}: unknown property file '{prop}' of '{target}'")
    return errors
