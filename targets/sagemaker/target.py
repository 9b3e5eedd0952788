"""The SageMaker target: Plan -> a Pulumi project (pulumi-aws) plus a Pipelines definition."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from specml.compiler.errors import Diagnostic, TargetError
from specml.compiler.ir import Plan
from specml.targets.base import EmitResult
from specml.targets.sagemaker import project
from specml.targets.sagemaker.alarms import alarm_specs
from specml.targets.sagemaker.diagnostics import unsupported
from specml.targets.sagemaker.features import feature_diagnostics
from specml.targets.sagemaker.pipeline_definition import (
    build_definition,
    definition_json,
    placeholder_refs,
    validate_definition,
)
from specml.targets.sagemaker.rollout import traffic_routing
from specml.targets.sagemaker.schedules import loop_diagnostics

FILES = (
    "Pulumi.yaml",
    "README.md",
    "__main__.py",
    "pipeline_definition.json",
    "plan.json",
    "requirements.txt",
)


def _missing_settings() -> Diagnostic:
    return Diagnostic(
        "the spec has no targets.sagemaker settings",
        path=("targets", "sagemaker"),
        hint="add e.g. `targets: {sagemaker: {region: eu-west-1, instance_type: ml.m5.large}}`",
        stage="target",
        code="sagemaker_missing_settings",
    )


# Families of SageMaker instances that carry NVIDIA GPUs.
GPU_FAMILIES = frozenset(
    ("g4dn", "g5", "g6", "g6e", "gr6", "p3", "p3dn", "p4d", "p4de", "p5", "p5e", "p5en")
)


def _gpu_diagnostics(plan: Plan) -> list[Diagnostic]:
    """GPU training or serving asked for on an instance type without a GPU."""
    sm = plan.targets.sagemaker
    assert sm is not None
    out = []
    if plan.training.resources.accelerator == "gpu" and (
        sm.training_instance_type.split(".")[1] not in GPU_FAMILIES
    ):
        out.append(
            Diagnostic(
                "training.resources.accelerator is gpu, but SageMaker instance "
                f"'{sm.training_instance_type}' has no GPU",
                path=("targets", "sagemaker", "training_instance_type"),
                hint="use a GPU instance such as ml.g5.xlarge, or accelerator: auto",
                stage="target",
                code="gpu",
            )
        )
    gpus = plan.endpoint.resources.gpu_count
    if gpus > 0 and sm.instance_type.split(".")[1] not in GPU_FAMILIES:
        out.append(
            Diagnostic(
                f"serving.resources.gpus is {gpus}, but SageMaker instance "
                f"'{sm.instance_type}' has no GPU",
                path=("targets", "sagemaker", "instance_type"),
                hint="use a GPU instance such as ml.g5.xlarge, or set serving.resources.gpus: 0",
                stage="target",
                code="gpu",
            )
        )
    return out


def _tuning_diagnostics(plan: Plan) -> list[Diagnostic]:
    """Optuna runs inside the training job, not as SageMaker Automatic Model Tuning."""
    tuning = plan.training.tuning
    if tuning is None:
        return []
    return [
        unsupported(
            f"the {tuning.trials} trials run one after another inside the one training job "
            "(no parallel jobs, as SageMaker Automatic Model Tuning would), and the study is "
            "not kept between pipeline executions",
            ("training", "tuning"),
            hint="raise training_instance_type for faster trials",
            code="sagemaker_tuning_in_job",
        )
    ]


def _settings_diagnostics(plan: Plan) -> list[Diagnostic]:
    sm = plan.targets.sagemaker
    assert sm is not None
    out: list[Diagnostic] = []
    if not sm.image:
        out.append(
            unsupported(
                "targets.sagemaker.image is not set; the Pulumi program requires config `image`",
                ("targets", "sagemaker", "image"),
                hint="set an ECR image with specml installed in the spec, or `pulumi config set image`",
                code="sagemaker_image_from_config",
            )
        )
    if sm.role_arn or sm.role_from_stack:
        out.append(
            unsupported(
                "the execution role is not created here, so it is not granted this system's bucket, "
                "feature groups and logs",
                ("targets", "sagemaker", "role"),
                hint="grant it the statements of specml.targets.sagemaker.iam.execution_policy",
                code="sagemaker_external_role",
            )
        )
    ep = plan.endpoint.resources
    if ep.cpu or ep.memory:
        out.append(
            unsupported(
                f"serving.resources cpu/memory are not used; instance type {sm.instance_type} "
                "decides the endpoint's capacity",
                ("serving", "resources"),
                code="sagemaker_resources_ignored",
            )
        )
    tr = plan.training.resources
    if tr.cpu or tr.memory:
        out.append(
            unsupported(
                f"training.resources cpu/memory are not used; instance type "
                f"{sm.training_instance_type} decides the training job's capacity",
                ("training", "resources"),
                code="sagemaker_resources_ignored",
            )
        )
    return out


class SagemakerTarget:
    """Compile a Plan into a Pulumi program for SageMaker (run with `pulumi up`)."""

    name: ClassVar[str] = "sagemaker"
    extra: ClassVar[str] = "sagemaker"

    def check(self, plan: Plan) -> list[Diagnostic]:
        """What SageMaker cannot express exactly for this Plan (warnings) or at all (errors)."""
        if plan.targets.sagemaker is None:
            return [_missing_settings()]
        _, rollout = traffic_routing(plan)
        _, alarms = alarm_specs(plan)
        return [
            *_settings_diagnostics(plan),
            *_gpu_diagnostics(plan),
            *feature_diagnostics(plan),
            *rollout,
            *alarms,
            *loop_diagnostics(plan),
            *_tuning_diagnostics(plan),
        ]

    def emit(self, plan: Plan, out_dir: Path) -> EmitResult:
        """Write the Pulumi project; deterministic bytes for the same Plan."""
        if plan.targets.sagemaker is None:
            raise TargetError([_missing_settings()])
        diagnostics = self.check(plan)
        errors = [d for d in diagnostics if d.severity == "error"]
        if errors:
            raise TargetError(errors)
        definition = build_definition(plan, placeholder_refs(plan))
        problems = validate_definition(definition)
        if problems:  # a bug in this target, not in the spec: say so plainly
            raise TargetError(
                [
                    Diagnostic(
                        f"generated pipeline definition is invalid: {p}",
                        stage="target",
                        code="sagemaker_invalid_definition",
                        hint="please report this: the spec is fine, the sagemaker target is not",
                    )
                    for p in problems
                ]
            )
        contents = {
            "Pulumi.yaml": project.pulumi_yaml(plan),
            "README.md": project.readme(plan, diagnostics),
            "__main__.py": project.main_py(plan),
            "pipeline_definition.json": definition_json(definition),
            "plan.json": plan.to_json(),
            "requirements.txt": project.requirements_txt(),
        }
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in FILES:
            (out_dir / name).write_text(contents[name], encoding="utf-8", newline="\n")
        # check() already reported the diagnostics; README.md lists them for reviewers.
        approximated = sum(d.severity == "warning" for d in diagnostics)
        notes = (f"README.md lists {approximated} approximation(s)",) if approximated else ()
        return EmitResult(out_dir=out_dir, files=FILES, notes=notes)
