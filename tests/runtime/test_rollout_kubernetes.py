"""The in-cluster rollout controller against stand-ins of the Kubernetes and Prometheus HTTP APIs.

The controller talks through the official `kubernetes` client (CustomObjectsApi) and Prometheus'
query API over real HTTP; time is a ManualClock, so a 15-hour canary runs in a second. The plan is
specs/fraud.yaml: shadow 1h, then 1 % for 2h, 10 % for 6h, 50 % for 6h, 100 %; analysis every
5 min, 2 failures roll back; SLO p50 3 ms, p99 10 ms, error rate 1e-4.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from specml.compiler.api import plan_file
from specml.runtime.rollout.controller import ManualClock
from specml.runtime.rollout.kubernetes import (
    OWNER_ANNOTATION,
    STATE_ANNOTATION,
    ControllerConfig,
    InferenceServiceStore,
    IstioMirror,
    NotOwnedError,
    PrometheusFigures,
    drive,
)

sys.path.insert(0, str(Path(__file__).parent))
from kube_standins import KubeApi, PrometheusApi, object_path  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
NEW, OLD = "fraud-scorer-predictor-00002", "fraud-scorer-predictor-00001"
INTERVAL, FAILURE_LIMIT = 300, 2
# (time the percent was set, canaryTrafficPercent) of a healthy rollout: each hold, then the next
SCHEDULE = [(0, 0), (3600, 1), (3600 + 7200, 10), (10800 + 21600, 50), (32400 + 21600, None)]


@pytest.fixture(scope="module")
def plan():
    return plan_file(ROOT / "specs" / "fraud.yaml")


def _isvc(owned: bool = True) -> dict[str, Any]:
    annotations = {OWNER_ANNOTATION: "fraud-scorer"} if owned else {}
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": "fraud-scorer",
            "namespace": "risk",
            "labels": {"app.kubernetes.io/managed-by": "specml"},
            "annotations": annotations,
        },
        "spec": {"predictor": {"canaryTrafficPercent": 1, "model": {"storageUri": "s3://m"}}},
        "status": {
            "components": {
                "predictor": {"latestCreatedRevision": NEW, "latestRolledoutRevision": OLD}
            }
        },
    }


class Timeline:
    """What Prometheus answers at the clock's time: healthy, or an error-rate breach from `breach_at`."""

    def __init__(self, clock: ManualClock, breach_at: float | None = None) -> None:
        self.clock, self.breach_at = clock, breach_at

    def __call__(self, query: str) -> float | None:
        breached = self.breach_at is not None and self.clock.t >= self.breach_at
        if query.startswith("sum(increase("):
            assert 'revision_name=~"fraud-scorer-predictor-0000' in query  # the challenger's
            return 500.0
        if "histogram_quantile(0.5," in query:
            return 1.2
        if "histogram_quantile(0.99," in query:
            return 6.0
        if "response_code_class" in query:
            return 0.01 if breached else 0.0
        if "specml_prediction_psi" in query:
            return 0.02
        raise AssertionError(f"unexpected query {query}")


class Rig:
    """Stand-ins + a controller wired to them through the official clients."""

    def __init__(self, plan, isvc: dict[str, Any], breach_at: float | None = None) -> None:
        from kubernetes import client
        from specml.targets.kubeflow.monitor import shadow_virtual_service

        self.plan, self.clock = plan, ManualClock(0.0)
        self.mirror = shadow_virtual_service(plan)  # the compiled Istio mirror (istio: true)
        self.kube = KubeApi(isvc, *([self.mirror] if self.mirror else []))
        self.prom = PrometheusApi(Timeline(self.clock, breach_at))
        cfg = client.Configuration()
        cfg.host = self.kube.url
        self.api = client.CustomObjectsApi(client.ApiClient(cfg))
        from specml.targets.kubeflow.controller import controller_config

        config = json.loads(json.dumps(controller_config(plan)))
        config["prometheus_url"] = self.prom.url
        self.config = ControllerConfig.from_json(json.dumps(config))
        self.figures = PrometheusFigures(plan, self.config)
        self.percents: list[tuple[float, Any]] = []

    def store(self) -> InferenceServiceStore:
        """What cluster.py builds in a fresh controller process."""
        name = self.config.virtual_service
        mirror = IstioMirror(self.api, "risk", name) if name else None
        return InferenceServiceStore(
            self.api, "risk", "fraud-scorer", "fraud-scorer", mirror=mirror
        )

    def run(self, rounds: int) -> None:
        """A controller process living `rounds` loop rounds (a fresh process each call)."""
        seen = len(self.kube.patches)
        drive(
            self.plan,
            self.store(),
            self.figures,
            self.clock,
            max_ticks=rounds,
            idle_seconds=INTERVAL,
        )
        for body in self.kube.patches[seen:]:
            self.percents.append(body["spec"]["predictor"]["canaryTrafficPercent"])

    def transitions(self) -> list[tuple[float, Any]]:
        state = self.state()
        return [(h["at"], h["traffic_percent"]) for h in state["history"] if h["from"] is not None]

    def state(self) -> dict[str, Any]:
        return json.loads(self.kube.isvc["metadata"]["annotations"][STATE_ANNOTATION])

    def close(self) -> None:
        self.kube.close()
        self.prom.close()


@pytest.fixture
def rig_factory(plan):
    rigs: list[Rig] = []

    def make(
        isvc: dict[str, Any] | None = None, breach_at: float | None = None, istio: bool = False
    ) -> Rig:
        the_plan = (
            plan_file(ROOT / "specs" / "fraud.yaml", overrides=("+targets.kubeflow.istio=true",))
            if istio
            else plan
        )
        rigs.append(Rig(the_plan, isvc or _isvc(), breach_at))
        return rigs[-1]

    yield make
    for r in rigs:
        r.close()


def _compact(percents: list[Any]) -> list[Any]:
    out: list[Any] = []
    for p in percents:
        if not out or out[-1] != p:
            out.append(p)
    return out


def test_healthy_rollout_advances_after_each_hold_then_promotes(rig_factory) -> None:
    rig = rig_factory()
    rig.run(200)
    state = rig.state()
    assert state["status"] == "promoted"
    assert state["challenger_version"] == NEW and state["champion_version"] == OLD
    at = {h["to"] + str(h["step"]): h["at"] for h in state["history"]}
    assert [at["shadow0"], at["canary1"], at["canary2"], at["canary3"], at["canary4"]] == [
        t for t, _ in SCHEDULE
    ]
    assert at["promoted4"] == SCHEDULE[-1][0] + INTERVAL  # the 100 % step has no hold
    assert _compact(rig.percents) == [p for _, p in SCHEDULE]
    assert "canaryTrafficPercent" not in rig.kube.isvc["spec"]["predictor"]  # promoted: removed
    # every save was one merge PATCH with the resourceVersion it read
    assert set(rig.kube.content_types) == {"application/merge-patch+json"}
    assert all(b["metadata"].get("resourceVersion") is None for b in rig.kube.patches)  # popped


@pytest.mark.parametrize("breach_at", [5000.0, 5150.0, 20000.0])
def test_breach_rolls_back_within_interval_times_failure_limit(rig_factory, breach_at) -> None:
    rig = rig_factory(breach_at=breach_at)
    rig.run(200)
    state = rig.state()
    assert state["status"] == "rolled_back"
    rolled = next(h for h in state["history"] if h["to"] == "rolled_back")
    assert breach_at < rolled["at"] <= breach_at + INTERVAL * FAILURE_LIMIT
    assert rig.kube.isvc["spec"]["predictor"]["canaryTrafficPercent"] == 0
    assert "error_rate" in state["reason"]
    rig.run(3)  # done: it stays rolled back and does not touch the object again
    assert rig.state()["status"] == "rolled_back"


def test_no_breach_below_the_failure_limit(rig_factory) -> None:
    rig = rig_factory(breach_at=5000.0)
    rig.run(17)  # t = 5100: one breached tick, under the limit of 2
    state = rig.state()
    assert state["status"] == "canary" and state["consecutive_failures"] == 1


def test_resumes_after_a_kill_without_double_stepping(rig_factory) -> None:
    rig = rig_factory()
    rig.run(13)  # t = 3900: in the 1 % step, 300 s of its 7200 s hold done
    assert rig.state()["step_index"] == 1 and rig.state()["held_seconds"] == 300
    rig.clock.sleep(1800)  # the pod was down for 30 min: not analysed, not hold time
    rig.run(1)  # a new process reads the annotation: same step, same hold
    assert rig.state()["step_index"] == 1 and rig.state()["held_seconds"] == 300
    rig.run(300)
    state = rig.state()
    assert state["status"] == "promoted"
    assert _compact(rig.percents) == [p for _, p in SCHEDULE]  # no step applied twice
    steps = [h["step"] for h in state["history"] if h["from"] is not None]
    assert steps == [0, 1, 2, 3, 4, 4]  # the last: promoted
    # the 1 % step lasted its hold of analysed time, plus the 30 min down, plus the first round
    # of each of the two restarted processes (it only re-anchors the analysis window)
    entered = {h["step"]: h["at"] for h in state["history"]}
    assert entered[2] - entered[1] == 7200 + 1800 + 2 * INTERVAL


def test_a_kill_before_the_patch_leaves_the_previous_step_whole(rig_factory, monkeypatch) -> None:
    rig = rig_factory()
    rig.run(12)  # t = 3600: the shadow step ends, the 1 % step is PATCHed
    before = json.loads(json.dumps(rig.kube.isvc))
    rig2 = rig_factory()  # the same moment, but the PATCH never reaches the API server
    rig2.run(11)

    def killed(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(rig2.api, "patch_namespaced_custom_object", killed)
    with pytest.raises(KeyboardInterrupt):
        rig2.run(1)
    monkeypatch.undo()
    assert rig2.state()["status"] == "shadow"
    assert rig2.kube.isvc["spec"]["predictor"]["canaryTrafficPercent"] == 0
    rig2.run(2)  # the restarted controller decides again and applies the step once
    assert (
        rig2.state()["step_index"]
        == 1
        == json.loads(before["metadata"]["annotations"][STATE_ANNOTATION])["step_index"]
    )
    assert _compact(rig2.percents) == [0, 1]


def test_refuses_an_inference_service_it_does_not_own(rig_factory) -> None:
    rig = rig_factory(_isvc(owned=False))
    with pytest.raises(NotOwnedError, match="not owned by specml system 'fraud-scorer'"):
        rig.run(3)
    assert rig.kube.patches == []
    other = _isvc()
    other["metadata"]["annotations"][OWNER_ANNOTATION] = "another-system"
    rig2 = rig_factory(other)
    with pytest.raises(NotOwnedError):
        rig2.run(1)
    assert rig2.kube.patches == []


def test_a_concurrent_change_is_a_conflict_not_a_lost_update(rig_factory) -> None:
    rig = rig_factory()
    rig.run(3)
    edited = False

    def someone_else(isvc: dict[str, Any]) -> None:
        isvc["metadata"]["annotations"]["team.example/owner"] = "risk"

    original = rig.figures.sample

    def sample_then_edit(revision: str | None):
        nonlocal edited
        figures = original(revision)
        if not edited:  # between the controller's read and its PATCH
            rig.kube.edit(someone_else)
            edited = True
        return figures

    rig.figures.sample = sample_then_edit  # type: ignore[method-assign]
    held = rig.state()["held_seconds"]
    rig.run(3)
    assert rig.kube.isvc["metadata"]["annotations"]["team.example/owner"] == "risk"
    # round 1 (a fresh process) re-anchors and its PATCH hits the 409: dropped; round 2 re-reads
    # and re-anchors; round 3 holds one interval. No tick counted twice, the edit kept.
    assert rig.state()["held_seconds"] == held + INTERVAL


def test_a_new_revision_mid_rollout_starts_its_own_rollout(rig_factory) -> None:
    rig = rig_factory()
    rig.run(20)
    newer = "fraud-scorer-predictor-00003"

    def applied(isvc: dict[str, Any]) -> None:
        isvc["status"]["components"]["predictor"]["latestCreatedRevision"] = newer

    rig.kube.edit(applied)
    rig.run(1)
    state = rig.state()
    assert state["challenger_version"] == newer and state["status"] == "shadow"
    assert state["step_index"] == 0


def _mirror_settings(rig: Rig) -> list[float]:
    """Every mirror percentage the controller set, in order (JSON patches of the VirtualService)."""
    out = []
    for path, ops in rig.kube.json_patches:
        assert path.endswith("/virtualservices/fraud-scorer-shadow")
        assert [op["path"] for op in ops] == ["/spec/http/0/mirrorPercentage"]
        out.append(ops[0]["value"]["value"])
    return out


def _allowed(rules: list[dict[str, Any]], method: str, path: str) -> bool:
    """Whether a namespaced API call is allowed by a Role's rules (RBAC's matching)."""
    verb = {"GET": "get", "PATCH": "patch"}[method]
    group, _version, _ns, _namespace, resource, name = path.removeprefix("/apis/").split("/")
    return any(
        group in r["apiGroups"]
        and resource in r["resources"]
        and name in r.get("resourceNames", [name])
        and verb in r["verbs"]
        for r in rules
    )


def test_the_istio_mirror_is_switched_off_when_the_rollout_leaves_shadow(rig_factory) -> None:
    rig = rig_factory(istio=True)
    mirror = rig.kube.get(rig.mirror)
    assert mirror["spec"]["http"][0]["mirrorPercentage"] == {"value": 50.0}  # as compiled
    rig.run(11)  # t = 3300: still in the 1 h shadow step
    assert rig.state()["status"] == "shadow"
    assert rig.kube.get(rig.mirror)["spec"]["http"][0]["mirrorPercentage"]["value"] == 50.0
    rig.run(200)  # a new process: shadow ends, canary steps, promoted
    assert rig.state()["status"] == "promoted"
    route = rig.kube.get(rig.mirror)["spec"]["http"][0]
    assert route["mirrorPercentage"] == {"value": 0.0}
    assert route["mirror"] == mirror["spec"]["http"][0]["mirror"]  # the route is left as applied
    # each process sets the shadow share on its first save, then 0 once, on leaving shadow
    assert _mirror_settings(rig) == [50.0, 50.0, 0.0]
    left_shadow = next(h["at"] for h in rig.state()["history"] if h["from"] == "shadow")
    assert left_shadow == SCHEDULE[1][0] + INTERVAL  # the restart re-anchored one interval
    # the mirror went to 0 right after the PATCH that left shadow, before any other call
    calls = rig.kube.requests
    leaving = next(
        i
        for i, b in enumerate(rig.kube.patches)
        if b["spec"]["predictor"]["canaryTrafficPercent"] == 1
    )
    isvc_patches = [
        i for i, (m, p) in enumerate(calls) if m == "PATCH" and "inferenceservices" in p
    ]
    assert calls[isvc_patches[leaving] + 1][1].endswith("/virtualservices/fraud-scorer-shadow")
    patch_types = {t for t in rig.kube.content_types if t != "application/merge-patch+json"}
    assert patch_types == {"application/json-patch+json"}


def test_a_rollback_in_shadow_switches_the_mirror_off(rig_factory) -> None:
    rig = rig_factory(istio=True, breach_at=1000.0)
    rig.run(200)
    state = rig.state()
    rolled = next(h for h in state["history"] if h["to"] == "rolled_back")
    assert rolled["from"] == "shadow"
    assert rig.kube.get(rig.mirror)["spec"]["http"][0]["mirrorPercentage"] == {"value": 0.0}
    assert _mirror_settings(rig) == [50.0, 0.0]
    assert rig.kube.isvc["spec"]["predictor"]["canaryTrafficPercent"] == 0


def test_the_compiled_role_allows_exactly_what_the_controller_does(rig_factory) -> None:
    from specml.targets.kubeflow.controller import controller_rules

    for istio, breach_at in ((True, None), (True, 1000.0), (False, None)):
        rig = rig_factory(istio=istio, breach_at=breach_at)
        rig.run(200)
        rules = controller_rules(rig.plan)
        calls = set(rig.kube.requests)
        assert calls and all(_allowed(rules, method, path) for method, path in calls)
        # and no more: every rule's verbs on its one object are what the controller used
        # (watch: kept for `kubectl`-style reads, not used by this loop)
        granted = {
            (verb.upper(), f"/apis/{g}/v1beta1/namespaces/risk/{res}/{name}")
            for r in rules
            for g in r["apiGroups"]
            for res in r["resources"]
            for name in r["resourceNames"]
            for verb in r["verbs"]
            if verb != "watch"
        }
        assert granted == calls
        assert (len(rules) == 2) is istio


def test_a_missing_mirror_is_logged_and_retried_without_holding_the_rollout(
    rig_factory, caplog
) -> None:
    rig = rig_factory(istio=True)
    del rig.kube.objects[object_path(rig.mirror)]  # the VirtualService was never applied
    with caplog.at_level("WARNING", logger="specml.rollout"):
        rig.run(200)
    assert rig.state()["status"] == "promoted"
    tries = [p for m, p in rig.kube.requests if m == "PATCH" and "virtualservices" in p]
    assert len(tries) > 5  # every save retries: nothing was ever set
    assert "istio mirror risk/fraud-scorer-shadow not set to 0%: HTTP 404" in caplog.text
