"""`specml rollout status|promote|rollback SPEC --target kubeflow`: the in-cluster controller's state,
read through the official `kubernetes` client from an in-process stand-in of the API server."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kube_standins import KubeApi
from kubeflow_testlib import SPECS, plan_for
from specml.cli.main import app
from specml.runtime.monitor.live import LiveFigures
from specml.runtime.rollout.controller import Controller, ManualClock
from specml.runtime.rollout.kubernetes import OWNER_ANNOTATION, InferenceServiceStore
from typer.testing import CliRunner

SPEC = str(SPECS / "fraud.yaml")  # shadow 1 h, then 1 %, 10 %, 50 %, 100 %; namespace risk
NEW, OLD = "fraud-scorer-predictor-00002", "fraud-scorer-predictor-00001"


def _isvc(owner: str = "fraud-scorer") -> dict[str, Any]:
    return {
        "metadata": {
            "name": "fraud-scorer",
            "namespace": "risk",
            "labels": {"app.kubernetes.io/managed-by": "specml"},
            "annotations": {OWNER_ANNOTATION: owner},
        },
        "spec": {"predictor": {"canaryTrafficPercent": 0}},
        "status": {
            "components": {
                "predictor": {"latestCreatedRevision": NEW, "latestRolledoutRevision": OLD}
            }
        },
    }


@pytest.fixture
def kube():
    api = KubeApi(_isvc())
    yield api
    api.close()


def cli(kube: KubeApi, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        app, [*args, SPEC, "--target", "kubeflow", "--endpoint", f"kubernetes={kube.url}"]
    )
    return result.exit_code, result.output


def _in_canary(kube: KubeApi) -> None:
    """The controller's own saves, through the official client: shadow held 1 h, now at 1 %."""
    from kubernetes import client

    cfg = client.Configuration()
    cfg.host = kube.url
    store = InferenceServiceStore(
        client.CustomObjectsApi(client.ApiClient(cfg)), "risk", "fraud-scorer", "fraud-scorer"
    )
    store.read()
    clock = ManualClock(1_000.0)
    ctl = Controller.start(plan_for("fraud"), store, NEW, OLD, clock=clock)
    ctl.begin()
    healthy = LiveFigures(p50_latency_ms=1.2, p99_latency_ms=6.0, error_rate=0.0, requests=500)
    for _ in range(12):
        clock.sleep(300)
        ctl.tick(healthy)
    clock.sleep(300)
    ctl.tick(LiveFigures(p50_latency_ms=1.2, p99_latency_ms=14.0, error_rate=0.0, requests=500))
    assert ctl.state.status == "canary" and ctl.state.step_index == 1


def test_status_of_a_rollout_in_canary_json(kube: KubeApi) -> None:
    _in_canary(kube)
    code, out = cli(kube, "rollout", "status", "--format", "json")
    assert code == 0, out
    doc = json.loads(out)["rollout"]
    assert doc["inference_service"] == "risk/fraud-scorer"
    assert doc["status"] == "canary"
    assert doc["challenger_version"] == NEW and doc["champion_version"] == OLD
    assert doc["step"]["index"] == 1 and doc["step"]["of"] == 5 and doc["step"]["kind"] == "traffic"
    assert doc["step"]["held_seconds"] == 0 and doc["step"]["hold_seconds"] == 7200
    assert doc["traffic"] == {
        "challenger_percent": 1.0,
        "champion_percent": 99.0,
        "shadow_sample_percent": 0.0,
    }
    assert doc["canary_traffic_percent"] == 1  # what the object holds, saved with the state
    assert doc["revisions"] == {"latest_created": NEW, "latest_rolled_out": OLD}
    # the last analysis: p99 over its 10 ms target, one failure of 2
    assert doc["slo"]["p99_latency_ms"] == {"target": 10.0, "live": 14.0, "ok": False}
    assert doc["consecutive_failures"] == 1 and doc["failure_limit"] == 2
    assert doc["breaches"] == ["slo p99_latency_ms 14 > 10"]
    assert [(h["from"], h["to"]) for h in doc["history"]] == [
        (None, "pending"),
        ("pending", "shadow"),
        ("shadow", "canary"),
    ]
    assert (
        "GET",
        "/apis/serving.kserve.io/v1beta1/namespaces/risk/inferenceservices/fraud-scorer",
    ) in kube.requests


def test_status_of_a_rollout_in_canary_human(kube: KubeApi) -> None:
    _in_canary(kube)
    code, out = cli(kube, "rollout", "status")
    assert code == 0, out
    assert "rollout canary" in out
    assert f"challenger v{NEW} vs champion v{OLD}: canary" in out
    assert "InferenceService risk/fraud-scorer: canaryTrafficPercent 1" in out
    assert "step 2/5 (traffic): held 0s of 7200s" in out
    assert "traffic: challenger 1% / champion 99%" in out
    assert "p99_latency_ms: live 14 (target 10) BREACH" in out
    assert "shadow -> canary at 1%" in out


def test_status_without_a_rollout_says_there_is_none(kube: KubeApi) -> None:
    code, out = cli(kube, "rollout", "status", "--format", "json")
    doc = json.loads(out)
    assert code == 0 and doc["rollout"] is None and not doc["diagnostics"]
    assert "no rollout" in doc["messages"][0]["message"]
    code, out = cli(kube, "rollout", "status")
    assert code == 0 and "no rollout" in out


def test_status_of_an_object_it_does_not_own_or_that_is_missing_is_a_diagnostic() -> None:
    other = KubeApi(_isvc(owner="another-system"))
    try:
        code, out = cli(other, "rollout", "status", "--format", "json")
        doc = json.loads(out)
        assert code == 3 and doc["diagnostics"][0]["code"] == "not_owned"
    finally:
        other.close()
    elsewhere = _isvc()
    elsewhere["metadata"]["name"] = "another-endpoint"
    missing = KubeApi(elsewhere)
    try:
        code, out = cli(missing, "rollout", "status", "--format", "json")
        doc = json.loads(out)
        assert code == 3 and doc["diagnostics"][0]["code"] == "not_applied"
        assert "specml apply" in doc["diagnostics"][0]["hint"]
    finally:
        missing.close()


@pytest.mark.parametrize("command", [["promote"], ["rollback", "--reason", "x"]])
def test_promote_and_rollback_are_usage_errors_on_kubeflow(kube: KubeApi, command) -> None:
    _in_canary(kube)
    before = json.dumps(kube.isvc, sort_keys=True)
    result = CliRunner().invoke(
        app, ["rollout", *command, SPEC, "--target", "kubeflow", "--format", "json"]
    )
    doc = json.loads(result.output)
    assert result.exit_code == 2
    diag = doc["diagnostics"][0]
    assert f"`specml rollout {command[0]}` is not supported on kubeflow" in diag["message"]
    assert "scale deployment fraud-scorer-rollout-controller --replicas=0" in diag["hint"]
    assert json.dumps(kube.isvc, sort_keys=True) == before  # nothing was changed


def test_a_malformed_endpoint_is_a_usage_error(kube: KubeApi) -> None:
    result = CliRunner().invoke(
        app, ["rollout", "status", SPEC, "--target", "kubeflow", "--endpoint", "kubernetes"]
    )
    assert result.exit_code == 2 and "is not ROLE=URL" in result.output
