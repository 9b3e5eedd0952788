"""KServe and PrometheusRule manifests: CRD schemas, rollout files, declared gaps (PromQL itself
is checked by promtool: test_promtool.py)."""

from __future__ import annotations

import json
from functools import cache

import jsonschema
import pytest
import yaml
from kubeflow_testlib import GOLDEN_SPECS, ROOT, plan_for, rendered
from specml.targets.kubeflow.checks import check_plan

SCHEMAS = ROOT / "targets" / "kubeflow" / "schemas"


@cache
def _validator(kind: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / f"{kind}.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _isvc_files(name: str) -> dict[str, dict]:
    files = rendered(name)
    return {
        rel: yaml.safe_load(text)
        for rel, text in files.items()
        if rel == "inferenceservice.yaml" or rel.startswith("rollout/")
    }


@pytest.mark.parametrize("name", GOLDEN_SPECS)
def test_inference_services_validate_against_the_crd_schema(name: str) -> None:
    plan = plan_for(name)
    for rel, doc in _isvc_files(name).items():
        errors = [e.message for e in _validator("inferenceservice").iter_errors(doc)]
        assert errors == [], rel
        pred = doc["spec"]["predictor"]
        assert pred["minReplicas"] == plan.endpoint.min_replicas <= pred["maxReplicas"]
        assert pred["model"]["modelFormat"] == {"name": "onnx"}
        assert doc["metadata"]["namespace"] == plan.targets.kubeflow.namespace


def test_schema_rejects_what_kserve_would_reject() -> None:
    doc = _isvc_files("fraud")["inferenceservice.yaml"]
    bad_percent = json.loads(json.dumps(doc))
    bad_percent["spec"]["predictor"]["canaryTrafficPercent"] = 150
    typo = json.loads(json.dumps(doc))
    typo["spec"]["predictor"]["model"]["storageURI"] = "s3://x"
    bad_name = json.loads(json.dumps(doc))
    bad_name["metadata"]["name"] = "Fraud_Scorer"
    bad_qty = json.loads(json.dumps(doc))
    bad_qty["spec"]["predictor"]["model"]["resources"]["limits"]["memory"] = "4 GB"
    for broken in (bad_percent, typo, bad_name, bad_qty):
        assert list(_validator("inferenceservice").iter_errors(broken)), broken


def test_fraud_rollout_is_one_manifest_per_traffic_step() -> None:
    files = _isvc_files("fraud")
    percents = {rel: d["spec"]["predictor"].get("canaryTrafficPercent") for rel, d in files.items()}
    assert percents == {
        "inferenceservice.yaml": 1,
        "rollout/step-02-traffic-10.yaml": 10,
        "rollout/step-03-traffic-50.yaml": 50,
        "rollout/step-04-traffic-100.yaml": None,  # promotion: the canary field is removed
        "rollout/rollback.yaml": 0,
    }
    main = files["inferenceservice.yaml"]
    pred = main["spec"]["predictor"]
    assert pred["imagePullSecrets"] == [{"name": "ghcr-pull"}]  # the reference, never a value
    assert pred["model"]["storageUri"] == "s3://acme-risk-models/fraud-scorer"
    assert pred["model"]["resources"]["limits"] == {"cpu": "2", "memory": "4Gi"}
    assert pred["batcher"] == {"maxBatchSize": 32, "maxLatency": 1}
    assert main["metadata"]["annotations"]["specml.io/hold"] == "2h"
    # every manifest is the same object apart from the traffic split and its annotations
    for doc in files.values():
        doc["spec"]["predictor"].pop("canaryTrafficPercent", None)
        doc["metadata"]["annotations"].pop("specml.io/hold", None)
        doc["metadata"]["annotations"].pop("specml.io/rollout-step", None)
    assert all(doc == files["inferenceservice.yaml"] for doc in files.values())


def test_churn_has_a_documented_storage_placeholder() -> None:
    doc = _isvc_files("churn")["inferenceservice.yaml"]
    assert doc["spec"]["predictor"]["model"]["storageUri"] == "s3://REPLACE-ME-model-bucket/churn"
    assert doc["spec"]["predictor"]["canaryTrafficPercent"] == 5
    codes = {d.code for d in check_plan(plan_for("churn"))}
    assert "kubeflow_storage_uri_placeholder" in codes
    assert "REPLACE-ME" in rendered("churn")["README.md"]


@pytest.mark.parametrize("name", GOLDEN_SPECS)
def test_shadow_steps_are_declared_not_dropped(name: str) -> None:
    plan = plan_for(name)
    shadow = [s for s in plan.rollout.steps if s.kind == "shadow"]
    assert shadow, "the example specs start with a shadow step"
    diags = [d for d in check_plan(plan) if d.code == "unsupported_shadow"]
    assert [d.path for d in diags] == [("rollout", "steps", s.index) for s in shadow]
    for d in diags:
        assert d.severity == "warning" and d.stage == "unsupported"
        assert "not supported by the kubeflow target" in d.message
        assert "emitted instead" in (d.hint or "")
    assert "shadow steps are not supported" in rendered(name)["README.md"]


@pytest.mark.parametrize("name", GOLDEN_SPECS)
def test_prometheus_rule_validates_and_has_one_rule_per_threshold(name: str) -> None:
    plan = plan_for(name)
    doc = yaml.safe_load(rendered(name)["prometheusrule.yaml"])
    assert [e.message for e in _validator("prometheusrule").iter_errors(doc)] == []
    rules = [r for g in doc["spec"]["groups"] for r in g["rules"]]
    by_alert: dict[str, list[dict]] = {}
    for rule in rules:
        by_alert.setdefault(rule["labels"]["specml_alert"], []).append(rule)
    for alert in plan.alerts:
        severities = [r["labels"]["severity"] for r in by_alert[alert.id]]
        assert severities == [
            s for s, v in (("warning", alert.warn), ("critical", alert.critical)) if v is not None
        ]
        for rule in by_alert[alert.id]:
            threshold = alert.warn if rule["labels"]["severity"] == "warning" else alert.critical
            assert rule["expr"].endswith(f" >= {threshold:g}")  # a level is reached AT it
            assert rule.get("for", "0s") == (
                f"{alert.for_seconds // 60}m" if alert.for_seconds else "0s"
            )
    slo = by_alert["slo_breach"]
    assert len(slo) == sum(
        v is not None
        for v in (
            plan.endpoint.slo.p50_latency_ms,
            plan.endpoint.slo.p95_latency_ms,
            plan.endpoint.slo.p99_latency_ms,
            plan.endpoint.slo.error_rate,
        )
    )


def test_fraud_alert_expressions() -> None:
    doc = yaml.safe_load(rendered("fraud")["prometheusrule.yaml"])
    rules = {r["alert"]: r for g in doc["spec"]["groups"] for r in g["rules"]}
    p99 = rules["FraudScorerSLOP99Latency"]
    assert p99["expr"].startswith(
        "histogram_quantile(0.99, sum by (le) (rate(revision_app_request_latencies_bucket{"
    )
    assert p99["expr"].endswith("> 10") and p99["for"] == "10m"  # 5m interval x 2 failures
    assert p99["labels"]["specml_rollback"] == "true"
    drift = rules["FraudScorerAmountDriftCritical"]["expr"]
    assert (
        'specml_feature_ks{system="fraud-scorer", feature=~"card_velocity:txn_amount_1h|' in drift
    )
    assert rules["FraudScorerScoreDriftWarning"]["labels"]["specml_rollback"] == "true"
    assert rules["FraudScorerPrecisionDropWarning"]["labels"]["specml_rollback"] == "false"
    assert rules["FraudScorerErrorsCritical"]["for"] == "1m"
    assert 'response_code_class="5xx"' in rules["FraudScorerErrorsCritical"]["expr"]


def test_demand_blue_green_promotes_in_one_manifest() -> None:
    files = _isvc_files("demand")
    assert sorted(files) == ["inferenceservice.yaml", "rollout/rollback.yaml"]
    pred = files["inferenceservice.yaml"]["spec"]["predictor"]
    assert "canaryTrafficPercent" not in pred  # traffic: 100 in one step (blue -> green)
    assert pred["model"]["storageUri"] == "s3://acme-forecasting-models/demand-forecast"
    assert pred["batcher"] == {"maxBatchSize": 256, "maxLatency": 20}
    assert files["rollout/rollback.yaml"]["spec"]["predictor"]["canaryTrafficPercent"] == 0


@pytest.mark.parametrize("name", GOLDEN_SPECS)
def test_rule_group_names_are_unique(name: str) -> None:
    """The CRD lists groups as a map keyed by name (x-kubernetes-list-map-keys: [name])."""
    doc = yaml.safe_load(rendered(name)["prometheusrule.yaml"])
    names = [g["name"] for g in doc["spec"]["groups"]]
    assert names and len(names) == len(set(names))
    alerts = [r["alert"] for g in doc["spec"]["groups"] for r in g["rules"]]
    assert len(alerts) == len(set(alerts))


def _cluster_objects(files: dict[str, str]) -> list[tuple[str, dict]]:
    return [
        (rel, doc)
        for rel, text in files.items()
        if rel.startswith(("controller/", "monitor/", "rollout/shadow"))
        for doc in yaml.safe_load_all(text)
    ]


@pytest.mark.parametrize("name", GOLDEN_SPECS)
def test_controller_and_monitor_objects_validate_against_their_schemas(name: str) -> None:
    objects = _cluster_objects(rendered(name))
    assert {d["kind"] for _, d in objects} >= {"ConfigMap", "Deployment", "Role", "Service"}
    for rel, doc in objects:
        errors = [e.message for e in _validator("cluster-objects").iter_errors(doc)]
        assert errors == [], f"{rel} {doc['kind']}"
        assert doc["metadata"]["namespace"] == plan_for(name).targets.kubeflow.namespace


def test_cluster_object_schema_rejects_what_the_api_server_would() -> None:
    objects = dict((d["kind"], d) for _, d in _cluster_objects(rendered("fraud")))
    broken = []
    for kind, change in (
        ("Deployment", lambda d: d["spec"]["template"]["spec"]["containers"][0].update(imag="x")),
        ("Role", lambda d: d["rules"][0].update(verbs=["escalate"])),
        ("Service", lambda d: d["spec"]["ports"][0].update(port=70000)),
        ("ConfigMap", lambda d: d["metadata"].update(name="Fraud_Plan")),
        ("AlertmanagerConfig", lambda d: d["spec"]["route"]["matchers"][0].update(matchType="==")),
    ):
        doc = json.loads(json.dumps(objects[kind]))
        change(doc)
        broken.append(doc)
    for doc in broken:
        assert list(_validator("cluster-objects").iter_errors(doc)), doc["kind"]


def test_the_controller_may_touch_only_its_inference_service() -> None:
    objects = [d for _, d in _cluster_objects(rendered("fraud"))]
    (role,) = [d for d in objects if d["kind"] == "Role"]
    assert role["rules"] == [
        {
            "apiGroups": ["serving.kserve.io"],
            "resources": ["inferenceservices"],
            "resourceNames": ["fraud-scorer"],
            "verbs": ["get", "watch", "patch"],
        }
    ]
    (binding,) = [d for d in objects if d["kind"] == "RoleBinding"]
    (deployment,) = [
        d for d in objects if d["kind"] == "Deployment" and "rollout" in d["metadata"]["name"]
    ]
    pod = deployment["spec"]["template"]["spec"]
    assert binding["subjects"][0]["name"] == pod["serviceAccountName"] == role["metadata"]["name"]
    assert pod["containers"][0]["command"][-1] == "rollout-controller"
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}  # one writer at a time
    config = next(d for d in objects if d["kind"] == "ConfigMap")
    queries = json.loads(config["data"]["controller.json"])
    rule = yaml.safe_load(rendered("fraud")["prometheusrule.yaml"])
    exprs = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
    # the controller asks what the rules compute (on the challenger's revision)
    for figure_expr in queries["figures"].values():
        unbound = figure_expr.replace(', revision_name=~"$revision"', "")
        assert any(e.startswith(unbound) for e in exprs), figure_expr
    assert sorted(queries["alerts"]) == ["errors", "score_drift"]
    isvc = yaml.safe_load(rendered("fraud")["inferenceservice.yaml"])
    assert isvc["metadata"]["annotations"]["specml.io/rollout-controller"] == "fraud-scorer"
    assert isvc["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "specml"


def test_payload_logger_feeds_the_monitor_service() -> None:
    files = rendered("fraud")
    isvc = yaml.safe_load(files["inferenceservice.yaml"])
    logger = isvc["spec"]["predictor"]["logger"]
    assert logger == {
        "mode": "all",
        "url": "http://fraud-scorer-monitor.risk.svc.cluster.local/events",
    }
    objects = {d["kind"]: d for rel, d in _cluster_objects(files) if rel.startswith("monitor/")}
    assert objects["Service"]["metadata"]["name"] == "fraud-scorer-monitor"
    assert objects["Service"]["spec"]["ports"][0]["port"] == 80
    assert objects["ServiceMonitor"]["spec"]["selector"] == {
        "matchLabels": objects["Service"]["spec"]["selector"]
    }
    args = objects["Deployment"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--reference") + 1] == "/mnt/models/fraud-scorer/1"


def test_with_istio_a_shadow_step_is_a_mirror_driven_by_the_controller() -> None:
    from specml.targets.kubeflow.target import KubeflowTarget

    plan = plan_for("fraud", ("+targets.kubeflow.istio=true",))
    files = KubeflowTarget().render(plan)
    vs = yaml.safe_load(files["rollout/shadow-virtualservice.yaml"])
    assert list(_validator("cluster-objects").iter_errors(vs)) == []
    route = vs["spec"]["http"][0]
    assert route["mirrorPercentage"] == {"value": 50.0}  # rollout.steps[0]: shadow 50 %
    assert route["mirror"]["host"] == "latest-fraud-scorer-predictor.risk.svc.cluster.local"
    assert (
        yaml.safe_load(files["inferenceservice.yaml"])["spec"]["predictor"]["canaryTrafficPercent"]
        == 0
    )  # the shadow step: users stay on the champion
    assert not [d for d in check_plan(plan) if d.code == "unsupported_shadow"]
    controller_plan = json.loads(
        yaml.safe_load(files["controller/rollout-controller.yaml"].split("---\n")[0])["data"][
            "plan.json"
        ]
    )
    assert controller_plan["rollout"]["steps"][0]["kind"] == "shadow"
    without = json.loads(
        yaml.safe_load(rendered("fraud")["controller/rollout-controller.yaml"].split("---\n")[0])[
            "data"
        ]["plan.json"]
    )
    assert [s["kind"] for s in without["rollout"]["steps"]] == ["traffic"] * 4


def test_with_istio_the_controller_may_patch_the_one_mirror_and_knows_its_name() -> None:
    from specml.targets.kubeflow.target import KubeflowTarget

    isvc_rule = {
        "apiGroups": ["serving.kserve.io"],
        "resources": ["inferenceservices"],
        "resourceNames": ["fraud-scorer"],
        "verbs": ["get", "watch", "patch"],
    }
    for istio in (True, False):
        files = KubeflowTarget().render(plan_for("fraud", (f"+targets.kubeflow.istio={istio}",)))
        docs = [
            yaml.safe_load(d) for d in files["controller/rollout-controller.yaml"].split("---\n")
        ]
        role = next(d for d in docs if d["kind"] == "Role")
        assert list(_validator("cluster-objects").iter_errors(role)) == []
        config = json.loads(docs[0]["data"]["controller.json"])
        if istio:
            name = yaml.safe_load(files["rollout/shadow-virtualservice.yaml"])["metadata"]["name"]
            assert role["rules"] == [
                isvc_rule,
                {
                    "apiGroups": ["networking.istio.io"],
                    "resources": ["virtualservices"],
                    "resourceNames": [name],
                    "verbs": ["patch"],
                },
            ]
            assert config["virtual_service"] == name == "fraud-scorer-shadow"
        else:
            assert role["rules"] == [isvc_rule]
            assert "virtual_service" not in config
            assert "rollout/shadow-virtualservice.yaml" not in files
