"""`apply --target kubeflow` and the retraining webhook, through kfp.Client and the kubernetes client
against in-process stand-ins of the KFP and Kubernetes APIs (tests/runtime/kube_standins.py)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from kube_standins import KfpApi, KubeApi, KubeApply
from kubeflow_testlib import plan_for, rendered
from specml.compiler.errors import TargetError
from specml.targets.kubeflow.apply import FIELD_MANAGER, KubeflowApplyOptions
from specml.targets.kubeflow.target import KubeflowTarget


@pytest.fixture
def cluster():
    kfp_api, kube = KfpApi(), KubeApply()
    yield kfp_api, kube
    kfp_api.close()
    kube.close()


def _options(kfp_api: KfpApi, kube: KubeApply, **kw: Any) -> KubeflowApplyOptions:
    return KubeflowApplyOptions(kfp_host=kfp_api.url, kfp_token="t0ken", kube_api=kube.url, **kw)


def test_apply_uploads_runs_schedules_and_server_side_applies(cluster, tmp_path: Path) -> None:
    kfp_api, kube = cluster
    plan = plan_for("fraud")
    report = KubeflowTarget().apply(plan, tmp_path, _options(kfp_api, kube))
    # the pipeline, as compiled, uploaded once with a version named after the spec hash
    (pipeline,) = kfp_api.pipelines.values()
    assert pipeline["display_name"] == "fraud-scorer"
    versions = kfp_api.versions[pipeline["pipeline_id"]]
    assert versions[-1]["display_name"].startswith("fraud-scorer-")
    uploaded = kfp_api.packages[versions[-1]["pipeline_version_id"]]
    assert uploaded == yaml.safe_load(rendered("fraud")["pipeline.yaml"])
    # one training run of that version, one recurring run per schedule (KFP cron has seconds)
    (run,) = kfp_api.runs
    assert (
        run["pipeline_version_reference"]["pipeline_version_id"]
        == versions[-1]["pipeline_version_id"]
    )
    (job,) = kfp_api.recurring.values()
    assert job["trigger"]["cron_schedule"]["cron"] == "0 0 2 * * *"
    assert int(job["max_concurrency"]) == 1 and job["no_catchup"] is True
    assert set(kfp_api.tokens) == {"Bearer t0ken"}
    # every manifest server-side-applied with field manager specml, forced, in dependency order
    kinds = [doc["kind"] for _, _, doc in kube.applied]
    assert kinds.index("ConfigMap") < kinds.index("Deployment")
    assert kinds.index("Role") < kinds.index("RoleBinding") < kinds.index("Deployment")
    assert {"InferenceService", "PrometheusRule", "ServiceMonitor", "AlertmanagerConfig"} <= set(
        kinds
    )
    for path, query, doc in kube.applied:
        assert query == {"fieldManager": FIELD_MANAGER, "force": "true"}
        assert path.endswith(f"/namespaces/risk/{path.split('/')[-2]}/{doc['metadata']['name']}")
    isvc = next(p for p, _, d in kube.applied if d["kind"] == "InferenceService")
    assert isvc == "/apis/serving.kserve.io/v1beta1/namespaces/risk/inferenceservices/fraud-scorer"
    assert report.run_id == run["run_id"]
    recorded = KubeflowTarget().recorded_plan(plan, tmp_path)
    assert json.loads(recorded.read_text())["spec_hash"] == plan.spec_hash  # `specml plan` diffs it


def test_a_second_apply_reuses_the_version_and_replaces_the_schedules(cluster, tmp_path) -> None:
    kfp_api, kube = cluster
    plan = plan_for("fraud")
    KubeflowTarget().apply(plan, tmp_path, _options(kfp_api, kube))
    first_jobs = set(kfp_api.recurring)
    (pipeline,) = kfp_api.pipelines.values()
    versions = len(kfp_api.versions[pipeline["pipeline_id"]])
    report = KubeflowTarget().apply(plan, tmp_path, _options(kfp_api, kube))
    assert len(kfp_api.versions[pipeline["pipeline_id"]]) == versions  # same spec hash: reused
    assert any("exists" in a for a in report.actions)
    assert len(kfp_api.recurring) == 1 and not set(kfp_api.recurring) & first_jobs


def test_dry_run_prints_every_action_and_touches_nothing(cluster, tmp_path: Path) -> None:
    kfp_api, kube = cluster
    plan = plan_for("fraud")
    report = KubeflowTarget().apply(plan, tmp_path, _options(kfp_api, kube, dry_run=True))
    assert kfp_api.pipelines == {} and kube.applied == [] and kfp_api.tokens == []
    text = "\n".join(report.actions)
    assert "upload pipeline 'fraud-scorer'" in text
    assert "create recurring run 'fraud-scorer-retrain-0' cron '0 0 2 * * *'" in text
    assert "server-side apply InferenceService risk/fraud-scorer" in text
    assert "server-side apply Deployment risk/fraud-scorer-rollout-controller" in text
    assert not KubeflowTarget().recorded_plan(plan, tmp_path).exists()


def test_without_an_endpoint_apply_says_where_to_give_one(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("KF_PIPELINES_ENDPOINT", raising=False)
    with pytest.raises(TargetError, match="no KFP endpoint") as info:
        KubeflowTarget().apply(plan_for("fraud"), tmp_path, KubeflowApplyOptions())
    assert info.value.diagnostics[0].path == ("targets", "kubeflow", "pipelines_host")


def _alertmanager(status: str, labels: dict[str, str]) -> dict[str, Any]:
    """Alertmanager's webhook payload (version 4)."""
    return {
        "version": "4",
        "groupKey": '{}:{specml_system="fraud-scorer"}',
        "status": status,
        "receiver": "fraud-scorer-retrain",
        "groupLabels": {},
        "commonLabels": labels,
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": [
            {
                "status": status,
                "labels": {"alertname": "FraudScorerPrecisionDropCritical", **labels},
                "annotations": {},
                "startsAt": "2026-11-25T23:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus/graph",
                "fingerprint": "abc",
            }
        ],
    }


def test_retraining_webhook_starts_a_kfp_run_and_honours_the_cooldown(cluster, tmp_path) -> None:
    import kfp
    from kubernetes import client
    from specml.runtime.rollout.kubernetes import OWNER_ANNOTATION, InferenceServiceStore
    from specml.runtime.rollout.webhook import KfpLauncher, RetrainWebhook, serve_webhook

    kfp_api, kube = cluster
    plan = plan_for("fraud")
    KubeflowTarget().apply(plan, tmp_path, _options(kfp_api, kube))
    runs_before = len(kfp_api.runs)
    isvc_api = KubeApi(
        {
            "metadata": {
                "name": "fraud-scorer",
                "namespace": "risk",
                "labels": {"app.kubernetes.io/managed-by": "specml"},
                "annotations": {OWNER_ANNOTATION: "fraud-scorer"},
            },
            "spec": {"predictor": {}},
        }
    )
    cfg = client.Configuration()
    cfg.host = isvc_api.url
    store = InferenceServiceStore(
        client.CustomObjectsApi(client.ApiClient(cfg)), "risk", "fraud-scorer", "fraud-scorer"
    )
    now = {"t": 1_000_000.0}
    launcher = KfpLauncher(kfp.Client(host=kfp_api.url), "fraud-scorer", "fraud-scorer", "risk", {})
    server = serve_webhook(RetrainWebhook(plan, store, launcher, lambda: now["t"]), 0)
    import threading

    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/alerts"

    def post(payload: dict[str, Any]) -> dict[str, Any]:
        req = urllib.request.Request(
            url, json.dumps(payload).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.load(resp)

    labels = {
        "specml_system": "fraud-scorer",
        "specml_alert": "precision_drop",
        "specml_retrain": "true",
        "severity": "critical",
    }
    try:
        assert post(_alertmanager("resolved", labels))["started"] is None
        assert (
            post(_alertmanager("firing", {**labels, "specml_retrain": "false"}))["started"] is None
        )
        assert len(kfp_api.runs) == runs_before
        started = post(_alertmanager("firing", labels))
        assert started["started"] == kfp_api.runs[-1]["run_id"]
        assert len(kfp_api.runs) == runs_before + 1
        newest = kfp_api.versions[next(iter(kfp_api.pipelines))][-1]["pipeline_version_id"]
        assert kfp_api.runs[-1]["pipeline_version_reference"]["pipeline_version_id"] == newest
        now["t"] += plan.retraining.cooldown_seconds - 1
        assert "cooldown" in post(_alertmanager("firing", labels))["reason"]
        assert len(kfp_api.runs) == runs_before + 1
        now["t"] += 2
        assert post(_alertmanager("firing", labels))["started"] is not None
        assert len(kfp_api.runs) == runs_before + 2
    finally:
        server.shutdown()
        server.server_close()
        isvc_api.close()


def test_a_run_that_fails_to_start_does_not_hold_the_cooldown() -> None:
    from kubernetes import client
    from specml.runtime.rollout.kubernetes import OWNER_ANNOTATION, InferenceServiceStore
    from specml.runtime.rollout.webhook import LAST_RETRAIN_ANNOTATION, RetrainWebhook

    class FlakyKfp:
        calls = 0

        def start(self, reason: str) -> str:
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("KFP API unavailable")
            return "run-2"

    isvc_api = KubeApi(
        {
            "metadata": {
                "name": "fraud-scorer",
                "namespace": "risk",
                "labels": {"app.kubernetes.io/managed-by": "specml"},
                "annotations": {OWNER_ANNOTATION: "fraud-scorer"},
            },
            "spec": {"predictor": {}},
        }
    )
    try:
        cfg = client.Configuration()
        cfg.host = isvc_api.url
        store = InferenceServiceStore(
            client.CustomObjectsApi(client.ApiClient(cfg)), "risk", "fraud-scorer", "fraud-scorer"
        )
        hook = RetrainWebhook(plan_for("fraud"), store, FlakyKfp(), lambda: 5000.0)  # type: ignore[arg-type]
        labels = {"specml_system": "fraud-scorer", "specml_retrain": "true"}
        with pytest.raises(RuntimeError, match="unavailable"):
            hook.handle(_alertmanager("firing", labels))
        assert LAST_RETRAIN_ANNOTATION not in isvc_api.isvc["metadata"]["annotations"]
        assert hook.handle(_alertmanager("firing", labels))["started"] == "run-2"  # the retry
        assert isvc_api.isvc["metadata"]["annotations"][LAST_RETRAIN_ANNOTATION] == "5000"
    finally:
        isvc_api.close()
