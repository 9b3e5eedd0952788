"""Plan.endpoint + Plan.rollout -> a KServe v1beta1 InferenceService and one manifest per step.

KServe's canary: applying an InferenceService whose spec changed creates a new revision, and
`canaryTrafficPercent` splits traffic between it and the last ready revision. So the first
traffic step is `inferenceservice.yaml`, each later step is the same object with a new percent
(`rollout/step-NN-traffic-P.yaml`), 100 % is the promotion (the field removed), and
`rollout/rollback.yaml` sends every request back to the previous revision (percent 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from specml.compiler.ir import ComputeResources, Plan, RolloutStep
from specml.targets.kubeflow.manifests import (
    common_annotations,
    common_labels,
    dump_manifest,
    human_duration,
    namespace,
)

API_VERSION = "serving.kserve.io/v1beta1"
KIND = "InferenceService"
MODEL_FORMAT = "onnx"
RUNTIME = "kserve-tritonserver"  # the ClusterServingRuntime KServe installs for ONNX
PROTOCOL = "v2"
GPU_RESOURCE = "nvidia.com/gpu"
STORAGE_PLACEHOLDER = (
    "s3://REPLACE-ME-model-bucket/{name}"  # when targets.kubeflow.storage_uri is unset
)
MAIN_MANIFEST = "inferenceservice.yaml"
ROLLBACK_MANIFEST = "rollout/rollback.yaml"


@dataclass(frozen=True)
class RolloutManifest:
    """One file of the rollout: which IR step it applies and the percent it sets (None: promote)."""

    path: str
    step: RolloutStep | None
    canary_percent: int | None


def storage_uri(plan: Plan) -> str:
    """Where KServe loads the model from: targets.kubeflow.storage_uri, or a placeholder."""
    settings = plan.targets.kubeflow
    if settings is not None and settings.storage_uri:
        return settings.storage_uri
    return STORAGE_PLACEHOLDER.format(name=plan.system.name)


def canary_percent(step: RolloutStep) -> int | None:
    """KServe takes whole percents; 100 % is a promotion (no canary field)."""
    if step.traffic_percent >= 100:
        return None
    return max(1, math.ceil(step.traffic_percent)) if step.traffic_percent > 0 else 0


def shadow_supported(plan: Plan) -> bool:
    """Shadow steps run where Istio mirrors traffic (targets.kubeflow.istio)."""
    return plan.targets.kubeflow is not None and plan.targets.kubeflow.istio


def shadow_mirror_name(plan: Plan) -> str | None:
    """The Istio VirtualService mirroring the shadow step (None: no shadow step, or no Istio)."""
    if plan.rollout is None or not shadow_supported(plan):
        return None
    if not any(s.kind == "shadow" for s in plan.rollout.steps):
        return None
    return f"{plan.endpoint.name}-shadow"


def traffic_steps(plan: Plan) -> list[RolloutStep]:
    """The rollout's steps KServe can take, in order (shadow steps need Istio's mirror)."""
    if plan.rollout is None:
        return []
    keep_shadow = shadow_supported(plan)
    return [s for s in plan.rollout.steps if s.kind == "traffic" or keep_shadow]


def needs_monitor(plan: Plan) -> bool:
    """Whether an alert reads the monitor service's drift gauges."""
    return any(a.kind in ("drift", "prediction_drift") for a in plan.alerts)


def monitor_url(plan: Plan) -> str:
    """Where the predictor's payload logger posts (the specml monitor Service)."""
    return f"http://{plan.system.name}-monitor.{namespace(plan)}.svc.cluster.local/events"


def rollout_manifests(plan: Plan) -> list[RolloutManifest]:
    """Every file of the rollout, in the order an operator applies them."""
    steps = traffic_steps(plan)
    if not steps:  # no rollout: deploy straight to 100 %
        return [RolloutManifest(MAIN_MANIFEST, None, None)]
    out = [RolloutManifest(MAIN_MANIFEST, steps[0], canary_percent(steps[0]))]
    for step in steps[1:]:
        if step.kind == "shadow":
            continue  # the controller holds the split at 0 while Istio mirrors
        pct = step.traffic_percent
        label = f"{pct:g}".replace(".", "_")
        out.append(
            RolloutManifest(
                f"rollout/step-{step.index:02d}-traffic-{label}.yaml", step, canary_percent(step)
            )
        )
    out.append(RolloutManifest(ROLLBACK_MANIFEST, None, 0))
    return out


def _resources(res: ComputeResources) -> dict[str, Any]:
    requests: dict[str, str] = {}
    if res.cpu:
        requests["cpu"] = res.cpu
    if res.memory:
        requests["memory"] = res.memory
    limits = dict(requests)
    if res.gpu_count > 0:
        limits[GPU_RESOURCE] = str(res.gpu_count)
    out: dict[str, Any] = {}
    if limits:
        out["limits"] = limits
    if requests:
        out["requests"] = requests
    return out


def batch_max_latency_ms(plan: Plan) -> int:
    """KServe's batcher takes whole milliseconds: the spec's delay, rounded up, at least 1."""
    return max(1, math.ceil(plan.endpoint.batching.max_delay_ms))


def inference_service(plan: Plan, manifest: RolloutManifest) -> dict[str, Any]:
    """The InferenceService object for one rollout manifest."""
    settings = plan.targets.kubeflow
    assert settings is not None
    endpoint = plan.endpoint
    annotations = common_annotations(plan)
    annotations.update(
        {
            # Exposes the predictor's (Knative queue-proxy + runtime) metrics to Prometheus.
            "serving.kserve.io/enable-prometheus-scraping": "true",
            # The new revision also answers at its own `latest-` URL: the stand-in for shadow.
            "serving.kserve.io/enable-tag-routing": "true",
        }
    )
    if manifest.step is not None:
        annotations["specml.io/rollout-step"] = str(manifest.step.index)
        annotations["specml.io/hold"] = human_duration(manifest.step.duration_seconds)
    if manifest.path == ROLLBACK_MANIFEST:
        annotations["specml.io/rollout-step"] = "rollback"
    if plan.rollout is not None:
        # the rollout controller acts only on an InferenceService its system owns
        annotations["specml.io/rollout-controller"] = plan.system.name
    model: dict[str, Any] = {
        "modelFormat": {"name": MODEL_FORMAT},
        "runtime": RUNTIME,
        "protocolVersion": PROTOCOL,
        "storageUri": storage_uri(plan),
    }
    resources = _resources(endpoint.resources)
    if resources:
        model["resources"] = resources
    predictor: dict[str, Any] = {
        "minReplicas": endpoint.min_replicas,
        "maxReplicas": endpoint.max_replicas,
    }
    if manifest.canary_percent is not None:
        predictor["canaryTrafficPercent"] = manifest.canary_percent
    if settings.service_account:
        predictor["serviceAccountName"] = settings.service_account
    if settings.image_pull_secret is not None and settings.image_pull_secret.kind == "secret":
        predictor["imagePullSecrets"] = [{"name": settings.image_pull_secret.name}]
    if endpoint.batching.enabled:
        predictor["batcher"] = {
            "maxBatchSize": endpoint.batching.max_batch_size,
            "maxLatency": batch_max_latency_ms(plan),
        }
    if needs_monitor(plan):
        predictor["logger"] = {"mode": "all", "url": monitor_url(plan)}
    predictor["model"] = model
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": endpoint.name,
            "namespace": namespace(plan),
            "labels": common_labels(plan),
            "annotations": annotations,
        },
        "spec": {"predictor": predictor},
    }


def _header(plan: Plan, manifest: RolloutManifest) -> str:
    if manifest.path == ROLLBACK_MANIFEST:
        what = "ROLLBACK: every request goes back to the previous (champion) revision."
    elif manifest.step is None:
        what = "Deploys the model at 100 % (no rollout declared)."
    elif manifest.canary_percent is None:
        what = f"rollout.steps[{manifest.step.index}]: promote the new revision to 100 %."
    else:
        what = (
            f"rollout.steps[{manifest.step.index}]: the new revision gets "
            f"{manifest.canary_percent} % of traffic; hold "
            f"{human_duration(manifest.step.duration_seconds)} before the next step."
        )
    return f"Generated by specml; do not edit.\n{what}"


def render_rollout(plan: Plan) -> dict[str, str]:
    """path -> YAML text for the InferenceService and every rollout manifest."""
    return {
        m.path: dump_manifest(inference_service(plan, m), header=_header(plan, m))
        for m in rollout_manifests(plan)
    }
