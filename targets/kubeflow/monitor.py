"""Drift in the cluster, and shadow through Istio.

- The predictor's payload logger (`spec.predictor.logger`, mode all) posts every request and
  response as a CloudEvent to the specml monitor Service; its Deployment runs
  `python -m specml.runtime monitor-service` (runtime/monitor/service.py), which compares windows
  of live inputs and scores with the training reference stored beside the model (fetched from the
  storageUri by KServe's storage initializer) and exports the `specml_feature_*` /
  `specml_prediction_*` gauges the PrometheusRule reads; a ServiceMonitor has Prometheus scrape it.
- With `targets.kubeflow.istio`, a shadow step is an Istio VirtualService mirroring its share of
  in-mesh requests to the new revision's `latest-` tag route.
"""

from __future__ import annotations

from typing import Any

from specml.compiler.ir import Plan
from specml.targets.kubeflow.controller import CONFIG_MOUNT, plan_config_map
from specml.targets.kubeflow.kserve import (
    needs_monitor,
    shadow_mirror_name,
    storage_uri,
)
from specml.targets.kubeflow.manifests import (
    common_labels,
    dump_manifest,
    namespace,
    object_meta,
)

MONITOR_FILE = "monitor/monitor.yaml"
SHADOW_FILE = "rollout/shadow-virtualservice.yaml"
MONITOR_PORT = 8080
MODEL_MOUNT = "/mnt/models"
# The image KServe's own storage initializer runs (same storageUri schemes and credentials).
STORAGE_INITIALIZER = "kserve/storage-initializer:v0.14.1"


def monitor_name(plan: Plan) -> str:
    """Name of the monitor's Deployment, Service and ServiceMonitor."""
    return f"{plan.system.name}-monitor"


def monitor_manifests(plan: Plan) -> list[dict[str, Any]]:
    """Deployment + Service (+ ServiceMonitor) of the monitor service."""
    settings = plan.targets.kubeflow
    assert settings is not None
    name = monitor_name(plan)
    selector = {
        "app.kubernetes.io/name": plan.system.name,
        "app.kubernetes.io/component": "monitor",
    }
    reference = f"{MODEL_MOUNT}/{plan.endpoint.name}/1"
    pod_spec: dict[str, Any] = {
        "initContainers": [
            {
                "name": "storage-initializer",
                "image": STORAGE_INITIALIZER,
                "args": [storage_uri(plan), MODEL_MOUNT],
                "volumeMounts": [{"name": "models", "mountPath": MODEL_MOUNT}],
            }
        ],
        "containers": [
            {
                "name": "monitor",
                "image": settings.image,
                "command": ["python", "-m", "specml.runtime", "monitor-service"],
                "args": [
                    "--plan",
                    f"{CONFIG_MOUNT}/plan.json",
                    "--reference",
                    reference,
                    "--port",
                    str(MONITOR_PORT),
                ],
                "ports": [{"name": "http", "containerPort": MONITOR_PORT}],
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}},
                "resources": {
                    "requests": {"cpu": "100m", "memory": "256Mi"},
                    "limits": {"cpu": "1", "memory": "1Gi"},
                },
                "volumeMounts": [
                    {"name": "plan", "mountPath": CONFIG_MOUNT, "readOnly": True},
                    {"name": "models", "mountPath": MODEL_MOUNT, "readOnly": True},
                ],
            }
        ],
        "volumes": [
            {"name": "plan", "configMap": {"name": plan_config_map(plan)}},
            {"name": "models", "emptyDir": {}},
        ],
    }
    if settings.service_account:
        pod_spec["serviceAccountName"] = settings.service_account  # storage credentials
    if settings.image_pull_secret is not None and settings.image_pull_secret.kind == "secret":
        pod_spec["imagePullSecrets"] = [{"name": settings.image_pull_secret.name}]
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": object_meta(plan, name, "monitor"),
        "spec": {
            # one replica: the drift windows live in its memory
            "replicas": 1,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {
                    "labels": {**common_labels(plan), **selector},
                    # a new plan (new reference, thresholds) restarts the pod
                    "annotations": {"specml.io/spec-hash": plan.spec_hash},
                },
                "spec": pod_spec,
            },
        },
    }
    service_meta = object_meta(plan, name, "monitor")
    service_meta["annotations"].update(
        {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(MONITOR_PORT),
            "prometheus.io/path": "/metrics",
        }
    )
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": service_meta,
        "spec": {
            "selector": selector,
            # the payload logger posts to port 80 of the URL it is given
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
        },
    }
    service_monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": object_meta(plan, name, "monitor"),
        "spec": {
            "selector": {"matchLabels": selector},
            "endpoints": [{"port": "http", "path": "/metrics", "interval": "30s"}],
        },
    }
    return [deployment, service, service_monitor]


def shadow_virtual_service(plan: Plan) -> dict[str, Any] | None:
    """The Istio mirror for the rollout's (first) shadow step, or None; the rollout controller
    sets its `mirrorPercentage` to 0 once the rollout leaves shadow."""
    name = shadow_mirror_name(plan)
    if plan.rollout is None or name is None:
        return None
    shadow = next(s for s in plan.rollout.steps if s.kind == "shadow")
    ns, predictor = namespace(plan), f"{plan.endpoint.name}-predictor"
    host = f"{predictor}.{ns}.svc.cluster.local"
    return {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "VirtualService",
        "metadata": object_meta(plan, name, "shadow"),
        "spec": {
            "hosts": [host],
            "gateways": ["mesh"],
            "http": [
                {
                    "route": [{"destination": {"host": host}}],
                    "mirror": {"host": f"latest-{predictor}.{ns}.svc.cluster.local"},
                    "mirrorPercentage": {"value": shadow.shadow_sample_percent},
                }
            ],
        },
    }


def render_monitor(plan: Plan) -> dict[str, str]:
    """path -> YAML text: the monitor service and the shadow mirror, where they apply."""
    header = "Generated by specml; do not edit."
    out = {}
    if needs_monitor(plan):
        docs = monitor_manifests(plan)
        out[MONITOR_FILE] = "---\n".join(dump_manifest(d, header=header) for d in docs)
    mirror = shadow_virtual_service(plan)
    if mirror is not None:
        out[SHADOW_FILE] = dump_manifest(mirror, header=header)
    return out
