"""What the kubeflow target cannot express for a Plan, as diagnostics naming the spec field."""

from __future__ import annotations

import math

from specml.compiler.errors import Diagnostic
from specml.compiler.ir import Plan
from specml.targets.kubeflow.kserve import STORAGE_PLACEHOLDER, batch_max_latency_ms

TARGET = "kubeflow"


def _unsupported(message: str, path: tuple[str | int, ...], hint: str, code: str) -> Diagnostic:
    return Diagnostic(
        message=message, path=path, hint=hint, severity="warning", stage="unsupported", code=code
    )


def settings_diagnostics(plan: Plan) -> list[Diagnostic]:
    """Errors that stop compilation: settings the target needs and cannot default."""
    settings = plan.targets.kubeflow
    if settings is None or not settings.image:
        return [
            Diagnostic(
                message="the kubeflow target needs targets.kubeflow.image (the runtime image its "
                "pipeline steps run in), and the spec has no targets.kubeflow section",
                path=("targets", "kubeflow", "image"),
                hint="add `targets: {kubeflow: {image: <registry>/specml-runtime:<tag>, "
                "namespace: <namespace>}}`; the image must have `specml[kubeflow]` installed",
                stage="target",
                code="kubeflow_image_required",
            )
        ]
    if settings.image_pull_secret is not None and settings.image_pull_secret.kind != "secret":
        return [
            Diagnostic(
                message="targets.kubeflow.image_pull_secret must name a Kubernetes Secret "
                f"({{secret: NAME}}), not an environment variable ({{env: "
                f"{settings.image_pull_secret.name}}})",
                path=("targets", "kubeflow", "image_pull_secret"),
                hint="write `image_pull_secret: {secret: <secret name in the namespace>}`",
                stage="target",
                code="kubeflow_pull_secret_kind",
            )
        ]
    return []


def _rollout_diagnostics(plan: Plan) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    if plan.rollout is None:
        return out
    for step in plan.rollout.steps:
        path = ("rollout", "steps", step.index)
        if step.kind == "shadow":
            out.append(
                _unsupported(
                    f"shadow steps are not supported by the {TARGET} target: KServe has no "
                    f"traffic mirroring, so this shadow step ({step.duration_seconds}s, "
                    f"{step.shadow_sample_percent:g}% of requests) is not emitted",
                    path,
                    "emitted instead: the rollout starts at the first traffic step, with KServe "
                    "tag routing on, so the new revision also answers at its `latest-` URL for "
                    "replayed traffic; use --target local for real shadowing",
                    "unsupported_shadow",
                )
            )
        elif 0 < step.traffic_percent < 100 and step.traffic_percent != math.ceil(
            step.traffic_percent
        ):
            out.append(
                _unsupported(
                    f"KServe's canaryTrafficPercent is a whole number: traffic "
                    f"{step.traffic_percent:g} is rounded up to "
                    f"{math.ceil(step.traffic_percent)}",
                    (*path, "traffic"),
                    "use whole percents for the kubeflow target",
                    "kubeflow_traffic_rounded",
                )
            )
    out.append(
        _unsupported(
            f"the {TARGET} target does not advance or roll back the rollout by itself "
            "(rollout.analysis, rollout.rollback_when): KServe only splits traffic",
            ("rollout",),
            "apply rollout/step-*.yaml after each hold and rollout/rollback.yaml when an alert "
            'labelled specml_rollback="true" fires (by hand or from your CD / Alertmanager)',
            "kubeflow_manual_rollout",
        )
    )
    return out


def _serving_diagnostics(plan: Plan) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    settings = plan.targets.kubeflow
    assert settings is not None
    batching = plan.endpoint.batching
    if batching.enabled and batching.max_delay_ms != batch_max_latency_ms(plan):
        out.append(
            _unsupported(
                f"KServe's batcher takes whole milliseconds: {batching.max_delay_ms:g} ms "
                f"becomes maxLatency {batch_max_latency_ms(plan)}",
                ("serving", "batching", "max_delay_ms"),
                "use a whole number of milliseconds for the kubeflow target",
                "kubeflow_batch_delay_rounded",
            )
        )
    if not settings.storage_uri:
        out.append(
            Diagnostic(
                message="not set: inferenceservice.yaml loads the "
                f"model from the placeholder {STORAGE_PLACEHOLDER.format(name=plan.system.name)}",
                path=("targets", "kubeflow", "storage_uri"),
                hint="set targets.kubeflow.storage_uri to the bucket/PVC holding the exported "
                "ONNX model (Triton layout, see README.md)",
                severity="warning",
                stage="target",
                code="kubeflow_storage_uri_placeholder",
            )
        )
    if settings.image_pull_secret is not None:
        out.append(
            _unsupported(
                "applies to the InferenceService only: "
                "KFP v2 pipeline pods get pull secrets from their service account",
                ("targets", "kubeflow", "image_pull_secret"),
                f"add the secret '{settings.image_pull_secret.name}' to the service account "
                "the pipeline runs as (imagePullSecrets)",
                "kubeflow_pipeline_pull_secret",
            )
        )
    return out


def _training_diagnostics(plan: Plan) -> list[Diagnostic]:
    res = plan.training.resources
    if res.accelerator == "auto" and res.gpu_count == 0:
        return [
            _unsupported(
                "'auto' cannot probe for a GPU on Kubeflow: "
                "the train step requests no GPU and runs on CPU nodes",
                ("training", "resources", "accelerator"),
                "write `accelerator: gpu, gpus: N` to train on GPU nodes",
                "kubeflow_accelerator_auto",
            )
        ]
    return []


def _lifecycle_diagnostics(plan: Plan) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    if plan.retraining is not None:
        for i, trigger in enumerate(plan.retraining.triggers):
            if trigger.kind == "schedule":
                continue  # README.md gives the create_recurring_run call with the cron
            out.append(
                _unsupported(
                    f"the {trigger.kind} trigger is not emitted by the {TARGET} target: KFP "
                    "starts runs on a schedule only",
                    ("retraining", "triggers", i),
                    "start runs from your own automation (e.g. an Alertmanager webhook calling "
                    "the KFP API), or use "
                    "--target local, whose monitor acts on triggers",
                    "kubeflow_trigger_unsupported",
                )
            )
    if plan.notifications.webhook_url is not None:
        out.append(
            _unsupported(
                "not emitted by the kubeflow target: alerts go to Prometheus' Alertmanager",
                ("notifications", "webhook"),
                "route the specml_system label to your webhook in the Alertmanager config",
                "kubeflow_webhook_unsupported",
            )
        )
    return out


def check_plan(plan: Plan) -> list[Diagnostic]:
    """Every diagnostic for this Plan: errors first (stop emit), then declared losses."""
    errors = settings_diagnostics(plan)
    if errors:
        return errors
    return [
        *_training_diagnostics(plan),
        *_serving_diagnostics(plan),
        *_rollout_diagnostics(plan),
        *_lifecycle_diagnostics(plan),
    ]
