"""Retraining on Kubeflow: an Alertmanager webhook receiver that starts a KFP run.

The compiled PrometheusRule labels the rules that are retraining triggers (`retraining.triggers`
alert and metric_drop entries) with `specml_retrain="true"`; Alertmanager posts them here (its
documented webhook JSON, version 4). A firing one starts a run of the system's pipeline, latest
version, through the KFP API (`kfp.Client`), unless the last automatic retrain is younger than
`retraining.cooldown`. That time is kept as an annotation on the InferenceService, so a restarted
controller still honours it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from specml.compiler.ir import Plan
from specml.runtime.rollout.kubernetes import GROUP, PLURAL, VERSION, InferenceServiceStore

LAST_RETRAIN_ANNOTATION = "specml.io/last-retrain-at"
RETRAIN_LABEL = "specml_retrain"
log = logging.getLogger("specml.retrain")


def retrain_reasons(plan: Plan, payload: dict[str, Any]) -> list[str]:
    """The firing retraining alerts of this system in one Alertmanager webhook payload."""
    out = []
    for alert in payload.get("alerts", []):
        labels = alert.get("labels", {})
        if (
            alert.get("status") == "firing"
            and labels.get("specml_system") == plan.system.name
            and labels.get(RETRAIN_LABEL) == "true"
        ):
            out.append(f"{labels.get('alertname')} ({labels.get('specml_alert', '?')}) firing")
    return out


@dataclass
class KfpLauncher:
    """Starts a run of the newest version of the system's pipeline (kfp.Client)."""

    client: Any  # kfp.Client
    pipeline_name: str
    experiment: str
    namespace: str
    params: dict[str, Any]

    def start(self, reason: str) -> str:
        """Start one run; returns its id."""
        pipeline_id = self.client.get_pipeline_id(self.pipeline_name)
        if pipeline_id is None:
            raise RuntimeError(f"no pipeline '{self.pipeline_name}' in KFP: run `specml apply`")
        versions = self.client.list_pipeline_versions(
            pipeline_id, page_size=1, sort_by="created_at desc"
        ).pipeline_versions
        experiment = self.client.create_experiment(self.experiment, namespace=self.namespace)
        stamp = datetime.now(tz=UTC).strftime("%Y%m%d-%H%M%S")
        run = self.client.run_pipeline(
            experiment.experiment_id,
            f"{self.pipeline_name}-retrain-{stamp}",
            params=self.params,
            pipeline_id=pipeline_id,
            version_id=versions[0].pipeline_version_id if versions else None,
        )
        log.info("started KFP run %s: %s", run.run_id, reason)
        return str(run.run_id)


@dataclass
class RetrainWebhook:
    """Decides on one webhook payload: start a run, or say why not (cooldown, nothing firing)."""

    plan: Plan
    store: InferenceServiceStore
    launcher: KfpLauncher
    now: Callable[[], float]

    def handle(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Start a run for firing retraining alerts, honouring the cooldown."""
        reasons = retrain_reasons(self.plan, payload)
        if not reasons or self.plan.retraining is None:
            return {"started": None, "reason": "no retraining alert firing"}
        isvc = self.store.read()
        last = (isvc["metadata"].get("annotations") or {}).get(LAST_RETRAIN_ANNOTATION)
        now = self.now()
        cooldown = self.plan.retraining.cooldown_seconds
        if last is not None and now - float(last) < cooldown:
            return {"started": None, "reason": f"cooldown: {now - float(last):.0f}s < {cooldown}s"}
        # claim the cooldown first (guarded by resourceVersion): two replicas or two payloads
        # racing cannot both start a run
        self.store.api.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            self.store.namespace,
            PLURAL,
            self.store.name,
            {
                "metadata": {
                    "resourceVersion": self.store.resource_version,
                    "annotations": {LAST_RETRAIN_ANNOTATION: f"{now:.0f}"},
                }
            },
        )
        try:
            run_id = self.launcher.start("; ".join(reasons))
        except Exception:
            # release the claim, so Alertmanager's retry (it resends on a 5xx) can start the run
            self.store.read()
            self.store.api.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                self.store.namespace,
                PLURAL,
                self.store.name,
                {"metadata": {"annotations": {LAST_RETRAIN_ANNOTATION: last}}},
            )
            raise
        return {"started": run_id, "reason": "; ".join(reasons)}


def serve_webhook(webhook: RetrainWebhook, port: int) -> ThreadingHTTPServer:
    """An HTTP server: POST /alerts (Alertmanager webhook), GET /healthz. Call serve_forever."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._reply(200 if self.path == "/healthz" else 404, {"ok": self.path == "/healthz"})

        def do_POST(self) -> None:
            if self.path != "/alerts":
                self._reply(404, {"error": "POST /alerts"})
                return
            try:
                length = int(self.headers.get("Content-Length", "0"))
                payload = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                self._reply(400, {"error": "body is not JSON"})
                return
            try:
                self._reply(200, webhook.handle(payload))
            except Exception as exc:  # Alertmanager retries on a 5xx
                log.exception("retraining webhook failed")
                self._reply(500, {"error": str(exc)})

        def _reply(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug(format, *args)

    return ThreadingHTTPServer(("0.0.0.0", port), Handler)
