"""What the kubeflow target cannot express for a Plan, as diagnostics naming the spec field."""

from __future__ import annotations

import math

from specml.compiler.errors import Diagnostic
from specml.compiler.ir import Plan
from specml.targets.kubeflow.controller import needs_webhook
from specml.targets.kubeflow.kserve import (
    STORAGE_PLACEHOLDER,
    batch_max_latency_ms,
    shadow_supported,
)

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
        if step.kind == "shadow" and not shadow_supported(plan):
            out.append(
                _unsupported(
                    f"shadow steps are not supported by the {TARGET} target without Istio: "
                    f"KServe has no traffic mirroring, so this shadow step "
                    f"({step.duration_seconds}s, {step.shadow_sample_percent:g}% of requests) is "
                    "not emitted",
                    path,
                    "emitted instead: the rollout starts at the first traffic step, with KServe "
                    "tag routing on, so the new revision also answers at its `latest-` URL; set "
                    "`targets.kubeflow.istio: true` where Istio runs to get a mirror",
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
            "the in-cluster rollout controller moves traffic and rolls back, but does not move "
            "the MLflow registry's champion alias (it has no registry credentials)",
            ("rollout",),
            "promote in the registry from your CD once the InferenceService is at 100 % "
            "(its `specml.io/rollout-state` annotation says `promoted`)",
            "kubeflow_registry_alias",
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
    strings = [f.input_name for f in plan.training.features if f.datatype == "BYTES"]
    if strings:
        out.append(
            _unsupported(
                "Triton's ONNX Runtime backend takes string inputs (BYTES / TYPE_STRING) but not "
                f'JSON null in them: a missing {", ".join(strings)} must be sent as "" '
                '(specml\'s own server maps null to "")',
                ("features",),
                "send an empty string for a missing category",
                "kubeflow_triton_null_strings",
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
    out: list[Diagnostic] = []
    if plan.training.tuning is not None:
        out.append(
            _unsupported(
                f"the {plan.training.tuning.trials} trials run one after another inside the "
                "train step's pod (no parallel trials across pods, as Katib would), and the "
                "Optuna study lives in the step's scratch workdir: a retried step starts it over",
                ("training", "tuning"),
                "pass a `workdir` on a shared volume to keep the study across retries",
                "kubeflow_tuning_in_step",
            )
        )
    res = plan.training.resources
    if res.accelerator == "auto" and res.gpu_count == 0:
        return out + [
            _unsupported(
                "'auto' cannot probe for a GPU on Kubeflow: "
                "the train step requests no GPU and runs on CPU nodes",
                ("training", "resources", "accelerator"),
                "write `accelerator: gpu, gpus: N` to train on GPU nodes",
                "kubeflow_accelerator_auto",
            )
        ]
    return out


def _lifecycle_diagnostics(plan: Plan) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    settings = plan.targets.kubeflow
    assert settings is not None
    if plan.retraining is not None:
        for i, trigger in enumerate(plan.retraining.triggers):
            if trigger.kind == "new_rows":
                out.append(
                    _unsupported(
                        f"the new_rows trigger is not emitted by the {TARGET} target: neither "
                        "KFP nor Prometheus sees the source table grow",
                        ("retraining", "triggers", i),
                        "export a row count gauge and use a metric alert trigger, or use "
                        "--target local, whose monitor counts new rows",
                        "kubeflow_trigger_unsupported",
                    )
                )
        if needs_webhook(plan) and not settings.pipelines_host:
            out.append(
                Diagnostic(
                    message="not set: the controller receives the retraining alerts but has no "
                    "KFP API to start runs with",
                    path=("targets", "kubeflow", "pipelines_host"),
                    hint="set targets.kubeflow.pipelines_host (and pipelines_token: {secret: "
                    "NAME}) or the KF_PIPELINES_ENDPOINT env var of the controller Deployment",
                    severity="warning",
                    stage="target",
                    code="kubeflow_pipelines_host_unset",
                )
            )
    token = settings.pipelines_token
    if token is not None and token.kind == "env" and needs_webhook(plan):
        out.append(
            _unsupported(
                "an env reference reaches `specml apply` only: the in-cluster controller "
                "reads the KFP token from a Secret",
                ("targets", "kubeflow", "pipelines_token"),
                "write `pipelines_token: {secret: <secret with key `token`>}`",
                "kubeflow_token_env",
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
