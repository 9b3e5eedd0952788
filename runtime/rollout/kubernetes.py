"""The rollout controller's Kubernetes backend: state on the InferenceService, figures from Prometheus.

The same `Controller` as the local target drives a KServe canary. What differs is where things live:
- state: the JSON `RolloutState` in the InferenceService's `specml.io/rollout-state` annotation, no
  local file. Every save is ONE merge PATCH carrying the state, `canaryTrafficPercent` and the
  `resourceVersion` it was read at, so a step is applied whole or not at all, and a concurrent
  change (a new model applied, a second controller) is a 409 instead of a lost update;
- figures: Prometheus' HTTP query API, with the expressions the compiled PrometheusRule holds
  (restricted to the challenger's revision, so the canary is judged on its own traffic);
- ownership: the controller acts only on an InferenceService labelled as managed by specml and
  annotated with its system's name; anything else is refused, untouched;
- shadow (Istio): the VirtualService's mirror follows the state. After each save the mirror is
  set to the shadow step's share while in shadow and to 0 otherwise, so leaving shadow (for the
  first canary step, a promotion or a rollback) stops mirroring. It is one JSON patch of one
  field, sent after the state is saved; a fresh controller process sends it on its first save,
  so a crash between the two is mended by the next run, and a refused patch (no VirtualService,
  no permission) is logged and retried on the next save without holding the rollout up.
After a restart it reads the state back from the annotation: same step, same hold time left.
"""

from __future__ import annotations

import json
import logging
import math
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from specml.compiler.ir import Plan
from specml.runtime.monitor.events import level_for
from specml.runtime.monitor.live import LiveFigures
from specml.runtime.rollout.controller import Clock, Controller, SystemClock
from specml.runtime.rollout.state import RolloutState

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
ISTIO_GROUP, ISTIO_VERSION, ISTIO_PLURAL = "networking.istio.io", "v1beta1", "virtualservices"
STATE_ANNOTATION = "specml.io/rollout-state"
OWNER_ANNOTATION = "specml.io/rollout-controller"  # value: the system's name
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "specml"
REVISION_PLACEHOLDER = "$revision"
log = logging.getLogger("specml.rollout")


def api_client(host: str | None, in_cluster_first: bool = False) -> Any:
    """A kubernetes ApiClient: an explicit API server URL (tests, port-forwards: no credentials),
    else the kubeconfig and the in-cluster service account, in-cluster first inside a pod."""
    from kubernetes import client, config

    if host:
        cfg = client.Configuration()
        cfg.host = host
        return client.ApiClient(cfg)
    loaders = [config.load_kube_config, config.load_incluster_config]
    first, second = reversed(loaders) if in_cluster_first else loaders
    try:
        first()
    except config.ConfigException:
        second()
    return client.ApiClient()


class NotOwnedError(RuntimeError):
    """The InferenceService is not one this controller may change."""


class ConflictError(RuntimeError):
    """The InferenceService changed since it was read (HTTP 409): read it again."""


def canary_percent(state: RolloutState) -> int | None:
    """KServe's `canaryTrafficPercent` for a state: whole percents, None (field removed) = promoted."""
    if state.status == "promoted" or state.traffic_percent >= 100:
        return None
    if state.traffic_percent <= 0:
        return 0
    return max(1, math.ceil(state.traffic_percent))


def check_owner(isvc: dict[str, Any], system: str) -> None:
    """Raise NotOwnedError unless the object is managed by specml for this system."""
    meta = isvc.get("metadata", {})
    labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
    if labels.get(MANAGED_BY_LABEL) != MANAGED_BY or annotations.get(OWNER_ANNOTATION) != system:
        raise NotOwnedError(
            f"InferenceService {meta.get('namespace')}/{meta.get('name')} is not owned by specml "
            f"system '{system}' (needs label {MANAGED_BY_LABEL}={MANAGED_BY} and annotation "
            f"{OWNER_ANNOTATION}={system}); refusing to change it"
        )


def revisions(isvc: dict[str, Any]) -> tuple[str | None, str | None]:
    """(latest created revision, last rolled-out revision) from the predictor's status."""
    predictor = (isvc.get("status") or {}).get("components", {}).get("predictor", {})
    return predictor.get("latestCreatedRevision"), predictor.get("latestRolledoutRevision")


def mirror_percent(state: RolloutState) -> float:
    """The share of requests Istio should mirror to the challenger in this state."""
    return state.shadow_sample_percent if state.status == "shadow" else 0.0


@dataclass
class IstioMirror:
    """The shadow step's Istio VirtualService: its first route's `mirrorPercentage`, kept in step
    with the rollout state (the compiled VirtualService has that one route)."""

    api: Any  # kubernetes.client.CustomObjectsApi
    namespace: str
    name: str
    percent: float | None = None  # what this process last set (None: not yet)

    def follow(self, state: RolloutState) -> None:
        """Set the mirror to the state's share, when it differs from what was last set."""
        wanted = mirror_percent(state)
        if state.status == "pending" or wanted == self.percent:
            return  # pending: saved once on creation, its first step comes in the same breath
        # a JSON patch of the one field: Role verb `patch` only, no read of the object, and the
        # route and mirror host (specml apply's) stay as they are
        from kubernetes.client.exceptions import ApiException

        try:
            self.api.api_client.call_api(
                f"/apis/{ISTIO_GROUP}/{ISTIO_VERSION}/namespaces/{self.namespace}/{ISTIO_PLURAL}"
                f"/{self.name}",
                "PATCH",
                header_params={
                    "Content-Type": "application/json-patch+json",
                    "Accept": "application/json",
                },
                body=[
                    {
                        "op": "add",
                        "path": "/spec/http/0/mirrorPercentage",
                        "value": {"value": wanted},
                    }
                ],
                response_type="object",
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
            )
        except ApiException as exc:  # the rollout goes on; the next save tries again
            log.warning(
                "istio mirror %s/%s not set to %g%%: HTTP %s %s",
                self.namespace,
                self.name,
                wanted,
                exc.status,
                exc.reason,
            )
            return
        self.percent = wanted
        log.info("istio mirror %s/%s set to %g%%", self.namespace, self.name, wanted)


@dataclass
class InferenceServiceStore:
    """A `StateStore` on one InferenceService, through the official `kubernetes` client."""

    api: Any  # kubernetes.client.CustomObjectsApi
    namespace: str
    name: str
    system: str
    resource_version: str | None = None
    mirror: IstioMirror | None = None  # the shadow step's mirror (targets.kubeflow.istio)

    def read(self) -> dict[str, Any]:
        """GET the InferenceService (remembering its resourceVersion); refuse one we do not own."""
        isvc = self.api.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, self.name
        )
        check_owner(isvc, self.system)
        self.resource_version = isvc["metadata"].get("resourceVersion")
        return isvc

    @staticmethod
    def state_of(isvc: dict[str, Any]) -> RolloutState | None:
        """The rollout state kept in the annotation, or None when there is none."""
        raw = (isvc["metadata"].get("annotations") or {}).get(STATE_ANNOTATION)
        return RolloutState(**json.loads(raw)) if raw else None

    def save(self, state: RolloutState) -> None:
        """One merge PATCH: state annotation + traffic split, guarded by the resourceVersion read."""
        from kubernetes.client.exceptions import ApiException

        body = {
            "metadata": {
                "resourceVersion": self.resource_version,
                "annotations": {STATE_ANNOTATION: json.dumps(state.to_json(), sort_keys=True)},
            },
            "spec": {"predictor": {"canaryTrafficPercent": canary_percent(state)}},
        }
        try:
            out = self.api.patch_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, self.name, body
            )
        except ApiException as exc:
            if exc.status == 409:
                raise ConflictError(f"{self.namespace}/{self.name} changed: {exc.reason}") from exc
            raise
        self.resource_version = out["metadata"].get("resourceVersion")
        if self.mirror is not None:
            self.mirror.follow(state)


@dataclass(frozen=True)
class ControllerConfig:
    """controller.json (compiled beside the plan): where Prometheus is and what to ask it."""

    prometheus_url: str
    figures: dict[str, str]  # SLO figure -> PromQL, `$revision` = the challenger's revision
    requests: str  # PromQL: challenger requests over one analysis interval
    alerts: dict[str, str] = field(default_factory=dict)  # rollback alert id -> PromQL value
    virtual_service: str | None = None  # the Istio mirror of the shadow step, if any

    @classmethod
    def from_json(cls, text: str) -> ControllerConfig:
        """Read controller.json."""
        raw = json.loads(text)
        return cls(
            raw["prometheus_url"],
            raw["figures"],
            raw["requests"],
            raw.get("alerts", {}),
            raw.get("virtual_service"),
        )


class PrometheusFigures:
    """Samples `LiveFigures` of one revision with instant queries (/api/v1/query)."""

    def __init__(self, plan: Plan, config: ControllerConfig, timeout: float = 10.0) -> None:
        self.plan, self.config, self.timeout = plan, config, timeout

    def query(self, expr: str) -> float | None:
        """The largest value of an instant vector (None: empty result or NaN)."""
        url = f"{self.config.prometheus_url.rstrip('/')}/api/v1/query"
        data = urllib.parse.urlencode({"query": expr}).encode()
        with urllib.request.urlopen(url, data=data, timeout=self.timeout) as resp:
            payload = json.load(resp)
        if payload.get("status") != "success":
            raise RuntimeError(f"prometheus query failed: {payload.get('error')}: {expr}")
        result = payload["data"]["result"]
        if payload["data"]["resultType"] == "scalar":
            result = [{"value": result}]
        values = [float(r["value"][1]) for r in result]
        values = [v for v in values if not math.isnan(v)]
        return max(values) if values else None

    def sample(self, revision: str | None) -> LiveFigures:
        """The challenger's SLO figures and the rollback alerts' levels, now."""

        def bind(expr: str) -> str:
            return expr.replace(REVISION_PLACEHOLDER, revision or ".*")

        values = {name: self.query(bind(expr)) for name, expr in self.config.figures.items()}
        levels = {
            alert_id: level_for(self.plan.alert(alert_id), self.query(expr))[0]
            for alert_id, expr in self.config.alerts.items()
        }
        return LiveFigures(
            **{k: v for k, v in values.items() if k in LiveFigures.__dataclass_fields__},
            requests=self.query(bind(self.config.requests)) or 0.0,
            alert_levels=levels,
        )


def status_of(store: InferenceServiceStore) -> dict[str, Any] | None:
    """`specml rollout status` for the in-cluster controller: its state, read from the
    InferenceService's annotation (ownership checked), with the traffic split the object has now.
    None when the object carries no rollout state."""
    from specml.runtime.rollout.status import status_document

    isvc = store.read()
    state = store.state_of(isvc)
    if state is None:
        return None
    latest, rolled_out = revisions(isvc)
    predictor = (isvc.get("spec") or {}).get("predictor") or {}
    return {
        "inference_service": f"{store.namespace}/{store.name}",
        **status_document(state),
        "revisions": {"latest_created": latest, "latest_rolled_out": rolled_out},
        "canary_traffic_percent": predictor.get("canaryTrafficPercent"),
    }


def _same(a: RolloutState, b: RolloutState) -> bool:
    """Equal apart from `last_tick_at` (a resumed controller clears it on purpose)."""
    x, y = a.to_json(), b.to_json()
    x.pop("last_tick_at"), y.pop("last_tick_at")
    return x == y


def load_controller(
    plan: Plan,
    store: InferenceServiceStore,
    clock: Clock,
    current: Controller | None = None,
    min_requests: int = 1,
) -> Controller | None:
    """The controller for the rollout the InferenceService is in (read now, ownership checked).

    Keeps `current` while the object's state is the one it saved; resumes from the annotation
    when it differs (a restart, another writer); starts a rollout for a new revision (a newer
    model applied mid-rollout replaces the running one). None when there is nothing to drive.
    """
    isvc = store.read()
    state = store.state_of(isvc)
    latest, rolled_out = revisions(isvc)
    new_revision = (
        latest is not None
        and latest != rolled_out
        and (state is None or state.challenger_version != latest)
    )
    if new_revision:
        assert latest is not None
        ctl = Controller.start(
            plan, store, latest, rolled_out, clock=clock, min_requests=min_requests
        )
        ctl.begin()
        return ctl
    if state is None or state.done:
        return None
    if current is not None and _same(current.state, state):
        return current
    return Controller.resume_state(state, store, clock=clock, min_requests=min_requests)


def drive(
    plan: Plan,
    store: InferenceServiceStore,
    figures: PrometheusFigures,
    clock: Clock | None = None,
    max_ticks: int | None = None,
    idle_seconds: float = 30.0,
    min_requests: int = 1,
) -> int:
    """The controller loop: every analysis interval, read the object, then tick (or idle).

    Returns the number of loop rounds made (runs for ever when max_ticks is None).
    """
    clock = clock or SystemClock()
    ctl: Controller | None = None
    ticks = 0
    while max_ticks is None or ticks < max_ticks:
        ticks += 1
        try:
            ctl = load_controller(plan, store, clock, ctl, min_requests)
            if ctl is None:
                clock.sleep(idle_seconds)
                continue
            clock.sleep(ctl.interval_seconds)
            ctl = load_controller(plan, store, clock, ctl, min_requests)
            if ctl is None:
                continue
            decision = ctl.tick(figures.sample(ctl.state.challenger_version))
            log.info("rollout of %s: %s", ctl.state.challenger_version, decision)
        except ConflictError as exc:
            log.warning("%s; reading it again", exc)
            ctl = None
    return ticks
