"""The in-cluster rollout controller: ConfigMap (plan + queries), RBAC, Deployment, webhook Service.

The Deployment runs `python -m specml.runtime rollout-controller` (runtime/rollout/cluster.py), the
same Controller as the local target. Its Role allows get/watch/patch on the ONE InferenceService
(by resourceNames) and, with an Istio shadow step, patch on the ONE VirtualService whose mirror it
switches off when the rollout leaves shadow; nothing else. With alert or metric-drop retraining triggers it also
receives Alertmanager webhooks (alertmanagerconfig.yaml routes the `specml_retrain` alerts to it)
and starts KFP runs.
"""

from __future__ import annotations

import json
from typing import Any

from specml.compiler.ir import Plan
from specml.targets.kubeflow.kserve import needs_monitor, shadow_mirror_name, shadow_supported
from specml.targets.kubeflow.manifests import (
    common_labels,
    dump_manifest,
    namespace,
    object_meta,
)
from specml.targets.kubeflow.prometheus import controller_queries

CONTROLLER_FILE = "controller/rollout-controller.yaml"
ALERTMANAGER_FILE = "controller/alertmanagerconfig.yaml"
CONFIG_MOUNT = "/etc/specml"
WEBHOOK_PORT = 8080
TOKEN_KEY = "token"  # key of the KFP token in the Secret targets.kubeflow.pipelines_token names


def plan_config_map(plan: Plan) -> str:
    """The ConfigMap holding plan.json and controller.json (the controller and monitor read it)."""
    return f"{plan.system.name}-plan"


def controller_plan(plan: Plan) -> Plan:
    """The Plan the controller drives: without shadow steps where no Istio mirror feeds them
    (a shadow step with no mirrored traffic would never see data, so never end)."""
    if plan.rollout is None or shadow_supported(plan):
        return plan
    steps = tuple(s for s in plan.rollout.steps if s.kind == "traffic")
    return plan.model_copy(update={"rollout": plan.rollout.model_copy(update={"steps": steps})})


def controller_name(plan: Plan) -> str:
    """Name of the controller's Deployment, ServiceAccount, Role, RoleBinding and Service."""
    return f"{plan.system.name}-rollout-controller"


def needs_webhook(plan: Plan) -> bool:
    """Whether retraining has triggers only Alertmanager can deliver (alert, metric_drop)."""
    return plan.retraining is not None and any(
        t.kind in ("alert", "metric_drop") for t in plan.retraining.triggers
    )


def needs_controller(plan: Plan) -> bool:
    """A rollout to drive or retraining alerts to receive."""
    return plan.rollout is not None or needs_webhook(plan)


def webhook_url(plan: Plan) -> str:
    """Where Alertmanager posts retraining alerts."""
    return f"http://{controller_name(plan)}.{namespace(plan)}.svc:{WEBHOOK_PORT}/alerts"


def controller_config(plan: Plan) -> dict[str, Any]:
    """controller.json: the Prometheus URL, the queries (the rules' own expressions) and, with an
    Istio shadow step, the VirtualService whose mirror the controller switches off after shadow."""
    assert plan.targets.kubeflow is not None
    config = {"prometheus_url": plan.targets.kubeflow.prometheus_url, **controller_queries(plan)}
    mirror = shadow_mirror_name(plan)
    if mirror is not None:
        config["virtual_service"] = mirror
    return config


def controller_rules(plan: Plan) -> list[dict[str, Any]]:
    """The Role's rules: get/watch/patch of the ONE InferenceService and, with an Istio shadow
    step, patch of the ONE VirtualService (its mirror percentage), both by resourceNames."""
    rules: list[dict[str, Any]] = [
        {
            "apiGroups": ["serving.kserve.io"],
            "resources": ["inferenceservices"],
            "resourceNames": [plan.endpoint.name],
            "verbs": ["get", "watch", "patch"],
        }
    ]
    mirror = shadow_mirror_name(plan)
    if mirror is not None:
        rules.append(
            {
                "apiGroups": ["networking.istio.io"],
                "resources": ["virtualservices"],
                "resourceNames": [mirror],
                "verbs": ["patch"],
            }
        )
    return rules


def _meta(plan: Plan, name: str) -> dict[str, Any]:
    return object_meta(plan, name, "rollout-controller")


def _container(plan: Plan) -> dict[str, Any]:
    settings = plan.targets.kubeflow
    assert settings is not None
    env: list[dict[str, Any]] = []
    if settings.pipelines_host:
        env.append({"name": "KF_PIPELINES_ENDPOINT", "value": settings.pipelines_host})
    token = settings.pipelines_token
    if token is not None and token.kind == "secret":
        env.append(
            {
                "name": "KF_PIPELINES_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": token.name, "key": TOKEN_KEY}},
            }
        )
    container: dict[str, Any] = {
        "name": "controller",
        "image": settings.image,
        "command": ["python", "-m", "specml.runtime", "rollout-controller"],
        "args": [
            "--plan",
            f"{CONFIG_MOUNT}/plan.json",
            "--config",
            f"{CONFIG_MOUNT}/controller.json",
            "--port",
            str(WEBHOOK_PORT),
        ],
        "ports": [{"name": "webhook", "containerPort": WEBHOOK_PORT}],
        "resources": {
            "requests": {"cpu": "50m", "memory": "128Mi"},
            "limits": {"cpu": "500m", "memory": "512Mi"},
        },
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
        },
        "volumeMounts": [{"name": "plan", "mountPath": CONFIG_MOUNT, "readOnly": True}],
    }
    if env:
        container["env"] = env
    return container


def controller_manifests(plan: Plan) -> list[dict[str, Any]]:
    """ConfigMap, ServiceAccount, Role, RoleBinding, Deployment (and the webhook Service)."""
    settings = plan.targets.kubeflow
    assert settings is not None
    name = controller_name(plan)
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(plan, plan_config_map(plan)),
        "data": {
            "controller.json": json.dumps(controller_config(plan), indent=2, sort_keys=True) + "\n",
            "plan.json": controller_plan(plan).to_json(),
        },
    }
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(plan, name)}
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _meta(plan, name),
        "rules": controller_rules(plan),
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _meta(plan, name),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace(plan)}],
    }
    selector = {
        "app.kubernetes.io/name": plan.system.name,
        "app.kubernetes.io/component": "rollout-controller",
    }
    pod_spec: dict[str, Any] = {
        "serviceAccountName": name,
        "containers": [_container(plan)],
        "volumes": [{"name": "plan", "configMap": {"name": config_map["metadata"]["name"]}}],
    }
    if settings.image_pull_secret is not None and settings.image_pull_secret.kind == "secret":
        pod_spec["imagePullSecrets"] = [{"name": settings.image_pull_secret.name}]
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(plan, name),
        "spec": {
            "replicas": 1,
            # one writer at a time: the old pod stops before the new one reads the state
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {
                    "labels": {**common_labels(plan), **selector},
                    # a new plan restarts the pod (the ConfigMap is read at start)
                    "annotations": {"specml.io/spec-hash": plan.spec_hash},
                },
                "spec": pod_spec,
            },
        },
    }
    if not needs_controller(plan):
        return [config_map]
    docs = [config_map, account, role, binding, deployment]
    if needs_webhook(plan):
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": _meta(plan, name),
                "spec": {
                    "selector": selector,
                    "ports": [{"name": "webhook", "port": WEBHOOK_PORT, "targetPort": "webhook"}],
                },
            }
        )
    return docs


def alertmanager_config(plan: Plan) -> dict[str, Any]:
    """An AlertmanagerConfig routing this system's `specml_retrain` alerts to the controller."""
    receiver = f"{plan.system.name}-retrain"
    return {
        "apiVersion": "monitoring.coreos.com/v1alpha1",
        "kind": "AlertmanagerConfig",
        "metadata": _meta(plan, receiver),
        "spec": {
            "route": {
                "receiver": receiver,
                "matchers": [
                    {"name": "specml_system", "value": plan.system.name, "matchType": "="},
                    {"name": "specml_retrain", "value": "true", "matchType": "="},
                ],
                "groupWait": "30s",
                "repeatInterval": "1h",
            },
            "receivers": [
                {
                    "name": receiver,
                    "webhookConfigs": [{"url": webhook_url(plan), "sendResolved": False}],
                }
            ],
        },
    }


def render_controller(plan: Plan) -> dict[str, str]:
    """path -> YAML text: the controller's manifests (and the Alertmanager route)."""
    if not needs_controller(plan) and not needs_monitor(plan):
        return {}
    header = "Generated by specml; do not edit."
    docs = controller_manifests(plan)
    out = {CONTROLLER_FILE: "---\n".join(dump_manifest(d, header=header) for d in docs)}
    if needs_webhook(plan):
        out[ALERTMANAGER_FILE] = dump_manifest(alertmanager_config(plan), header=header)
    return out
