"""`python -m specml.runtime rollout-controller --plan plan.json --config controller.json`.

What the kubeflow target's controller Deployment runs: the rollout loop (runtime/rollout/kubernetes)
in the main thread, which also sets the Istio mirror of a shadow step when controller.json names
its VirtualService, and, when the Plan has alert or metric-drop retraining triggers, the
Alertmanager webhook (runtime/rollout/webhook) on --port. In a pod the Kubernetes client uses the
service account's token (in-cluster config); elsewhere the current kubeconfig.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path

from specml.compiler.ir import Plan


def main(argv: list[str] | None = None) -> int:
    """Run the in-cluster rollout controller (and the retraining webhook) until killed."""
    from kubernetes import client
    from specml.runtime.rollout.kubernetes import (
        ControllerConfig,
        InferenceServiceStore,
        IstioMirror,
        NotOwnedError,
        PrometheusFigures,
        api_client,
        drive,
    )

    parser = argparse.ArgumentParser(prog="python -m specml.runtime rollout-controller")
    parser.add_argument("--plan", required=True, type=Path, help="the Plan's JSON file")
    parser.add_argument("--config", required=True, type=Path, help="controller.json")
    parser.add_argument("--port", type=int, default=8080, help="Alertmanager webhook port")
    parser.add_argument("--kube-api", default=None, help="API server URL (default: in-cluster)")
    parser.add_argument("--kfp-host", default=os.environ.get("KF_PIPELINES_ENDPOINT"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    plan = Plan.from_json(args.plan.read_text())
    config = ControllerConfig.from_json(args.config.read_text())
    assert plan.targets.kubeflow is not None
    namespace = plan.targets.kubeflow.namespace
    api = client.CustomObjectsApi(api_client(args.kube_api, in_cluster_first=True))
    mirror = IstioMirror(api, namespace, config.virtual_service) if config.virtual_service else None
    store = InferenceServiceStore(
        api, namespace, plan.endpoint.name, plan.system.name, mirror=mirror
    )
    if plan.retraining is not None and args.kfp_host:
        _start_webhook(plan, store, args.kfp_host, args.port)
    try:
        drive(plan, store, PrometheusFigures(plan, config))
    except NotOwnedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _start_webhook(plan: Plan, store: object, kfp_host: str, port: int) -> None:
    import kfp
    from specml.runtime.rollout.kubernetes import InferenceServiceStore
    from specml.runtime.rollout.webhook import KfpLauncher, RetrainWebhook, serve_webhook

    assert isinstance(store, InferenceServiceStore)
    params = json.loads(os.environ.get("SPECML_RUN_PARAMETERS", "{}"))
    client = kfp.Client(host=kfp_host, existing_token=os.environ.get("KF_PIPELINES_TOKEN"))
    launcher = KfpLauncher(client, plan.system.name, plan.system.name, store.namespace, params)
    # a separate store: the webhook's reads must not move the rollout loop's resourceVersion
    own = InferenceServiceStore(store.api, store.namespace, store.name, store.system)
    server = serve_webhook(RetrainWebhook(plan, own, launcher, time.time), port)
    threading.Thread(target=server.serve_forever, name="retrain-webhook", daemon=True).start()
