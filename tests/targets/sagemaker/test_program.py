"""The Pulumi program under pulumi.runtime.set_mocks: resources and properties per example spec."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import pytest
from sagemaker_testlib import (
    KMS_ARN,
    STACK_ROLE,
    WEBHOOK,
    Created,
    RecordingMocks,
    plain,
    plan_for,
    run_spec,
    secret_value,
    without_shadow,
)
from specml.targets.sagemaker.iam import UNSCOPABLE_ACTIONS
from specml.targets.sagemaker.pipeline_definition import validate_definition

ENDPOINT = "aws:sagemaker/endpoint:Endpoint"
ENDPOINT_CONFIG = "aws:sagemaker/endpointConfiguration:EndpointConfiguration"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
FEATURE_GROUP = "aws:sagemaker/featureGroup:FeatureGroup"


@cache
def ran(spec: str) -> tuple[RecordingMocks, dict[str, Any]]:
    return run_spec(spec)


def routing(spec: str) -> dict[str, Any]:
    endpoint = ran(spec)[0].one(ENDPOINT)
    return endpoint.inputs["deploymentConfig"]["blueGreenUpdatePolicy"]


def alarms_by_name(spec: str) -> dict[str, Created]:
    return {a.inputs["name"]: a for a in ran(spec)[0].of_type(ALARM)}


def test_churn_canary_routing_follows_the_first_traffic_step() -> None:
    policy = routing("churn")
    traffic = policy["trafficRoutingConfiguration"]
    assert traffic["type"] == "CANARY"
    assert traffic["canarySize"] == {"type": "CAPACITY_PERCENT", "value": 5}
    assert traffic["waitIntervalInSeconds"] == 1800  # hold: 30m after the 5% step
    assert "linearStepSize" not in traffic
    assert 600 <= policy["maximumExecutionTimeoutInSeconds"] <= 28800
    assert policy["terminationWaitInSeconds"] == 180  # analysis interval 1m x failure_limit 3


def test_demand_blue_green_is_all_at_once() -> None:
    traffic = routing("demand")["trafficRoutingConfiguration"]
    assert traffic["type"] == "ALL_AT_ONCE"
    assert "canarySize" not in traffic and "linearStepSize" not in traffic


def test_fraud_hold_is_clamped_to_sagemakers_limit() -> None:
    traffic = routing("fraud")["trafficRoutingConfiguration"]
    assert traffic["type"] == "CANARY"
    assert traffic["canarySize"]["value"] == 1
    assert traffic["waitIntervalInSeconds"] == 3600  # spec says 2h; check() reports it


@pytest.mark.parametrize("spec", ["churn", "fraud", "demand"])
def test_auto_rollback_names_alarms_that_exist(spec: str) -> None:
    endpoint = ran(spec)[0].one(ENDPOINT)
    named = [
        a["alarmName"]
        for a in endpoint.inputs["deploymentConfig"]["autoRollbackConfiguration"]["alarms"]
    ]
    alarms = alarms_by_name(spec)
    assert named and set(named) <= set(alarms)
    for name in named:
        dims = (
            alarms[name].inputs.get("dimensions")
            or alarms[name].inputs["metricQueries"][0]["metric"]["dimensions"]
        )
        if alarms[name].inputs.get("namespace") == "specml/Drift":  # the drift job's figure
            alert = alarms[name].inputs["tags"]["specml:alert"]
            assert dims == {"System": plan_for(spec).system.name, "Alert": alert}
            continue
        assert dims == {"EndpointName": plan_for(spec).endpoint.name, "VariantName": "primary"}


def test_churn_slo_latency_alarm_is_p95_in_microseconds() -> None:
    alarm = alarms_by_name("churn")["churn-slo-p95-latency"].inputs
    assert alarm["metricName"] == "ModelLatency" and alarm["namespace"] == "AWS/SageMaker"
    assert alarm["extendedStatistic"] == "p95"
    assert alarm["threshold"] == 50_000  # 50 ms SLO
    assert alarm["comparisonOperator"] == "GreaterThanThreshold"
    assert alarm["evaluationPeriods"] == 3  # rollout.analysis.failure_limit
    rollback = [a["alarmName"] for a in routing_alarms("churn")]
    assert "churn-slo-p95-latency" in rollback and "churn-slo-error-rate" in rollback
    # `slow` is a latency alert with action rollback: its critical level rolls back, warn notifies.
    assert "churn-slow-critical" in rollback and "churn-slow-warn" not in rollback
    assert alarms_by_name("churn")["churn-slow-critical"].inputs["threshold"] == 200_000
    assert alarms_by_name("churn")["churn-slow-critical"].inputs["tags"]["severity"] == "critical"


def routing_alarms(spec: str) -> list[dict[str, str]]:
    endpoint = ran(spec)[0].one(ENDPOINT)
    return endpoint.inputs["deploymentConfig"]["autoRollbackConfiguration"]["alarms"]


def test_error_rate_alarm_is_metric_math_over_5xx_and_invocations() -> None:
    alarm = alarms_by_name("fraud")["fraud-scorer-slo-error-rate"].inputs
    assert alarm["threshold"] == pytest.approx(0.0001)
    queries = {q["id"]: q for q in alarm["metricQueries"]}
    assert queries["errors"]["metric"]["metricName"] == "Invocation5XXErrors"
    assert queries["invocations"]["metric"]["metricName"] == "Invocations"
    assert "errors / invocations" in queries["error_rate"]["expression"]
    assert [q["id"] for q in alarm["metricQueries"] if q.get("returnData")] == ["error_rate"]
    p99 = alarms_by_name("fraud")["fraud-scorer-slo-p99-latency"].inputs
    assert (p99["extendedStatistic"], p99["threshold"]) == ("p99", 10_000)


def test_alarms_notify_the_webhook_topic_when_the_spec_has_one() -> None:
    mocks = ran("fraud")[0]
    sub = mocks.one("aws:sns/topicSubscription:TopicSubscription").inputs
    assert (sub["protocol"], secret_value(sub["endpoint"])) == ("https", WEBHOOK)
    assert all(a.inputs["alarmActions"] for a in mocks.of_type(ALARM))
    assert not ran("churn")[0].of_type("aws:sns/topic:Topic")


def test_bucket_is_versioned_encrypted_and_private() -> None:
    mocks = ran("churn")[0]
    assert mocks.one("aws:s3/bucketVersioning:BucketVersioning").inputs[
        "versioningConfiguration"
    ] == {"status": "Enabled"}
    sse = mocks.one(
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
    ).inputs["rules"][0]
    assert sse["applyServerSideEncryptionByDefault"] == {"sseAlgorithm": "AES256"}
    block = mocks.one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock").inputs
    for key in (
        "blockPublicAcls",
        "blockPublicPolicy",
        "ignorePublicAcls",
        "restrictPublicBuckets",
    ):
        assert block[key] is True
    assert mocks.one("aws:s3/bucketOwnershipControls:BucketOwnershipControls").inputs["rule"] == {
        "objectOwnership": "BucketOwnerEnforced"
    }


def test_kms_key_comes_from_a_config_secret_never_the_plan() -> None:
    mocks = ran("fraud")[0]
    rules = mocks.one(
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
    ).inputs["rules"]
    # The key ARN is a config secret, so everything holding it stays secret in the state.
    assert secret_value(rules)[0]["applyServerSideEncryptionByDefault"] == {
        "sseAlgorithm": "aws:kms",
        "kmsMasterKeyId": KMS_ARN,
    }
    assert KMS_ARN not in plan_for("fraud").to_json()  # only the reference is in the Plan
    for group in mocks.of_type(FEATURE_GROUP):
        offline = secret_value(group.inputs["offlineStoreConfig"])
        assert offline["s3StorageConfig"]["kmsKeyId"] == KMS_ARN


def _policy(spec: str) -> dict[str, Any]:
    mocks = ran(spec)[0]
    return json.loads(mocks.execution("aws:iam/rolePolicy:RolePolicy").inputs["policy"])


def test_created_role_is_least_privilege() -> None:
    mocks, outputs = ran("demand")
    role = mocks.execution("aws:iam/role:Role").inputs
    trust = json.loads(role["assumeRolePolicy"])["Statement"]
    assert trust == [
        {
            "Effect": "Allow",
            "Principal": {"Service": "sagemaker.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ]
    bucket_arn = f"arn:aws:s3:::{outputs['bucketName']}"
    for st in _policy("demand")["Statement"]:
        actions, resources = st["Action"], st["Resource"]
        if any(a.startswith("s3:") for a in actions):
            assert set(resources) <= {bucket_arn, f"{bucket_arn}/*"}, st
        if "*" in resources:
            assert set(actions) <= UNSCOPABLE_ACTIONS, st
        for r in resources:
            if ":sagemaker:" in r and "Condition" not in st:
                assert ":pipeline/demand-forecast-" in r or "/demand-forecast" in r, r
        if any(a.startswith("sagemaker:Create") for a in actions) and "Condition" in st:
            assert st["Condition"]["StringEquals"] == {
                "aws:RequestTag/specml:system": "demand-forecast"
            }
    assert {"logs:PutLogEvents", "cloudwatch:PutMetricData"} <= {
        a for st in _policy("demand")["Statement"] for a in st["Action"]
    }


def test_given_roles_are_used_not_created() -> None:
    churn, churn_out = ran("churn")  # role: {from_stack: acme/ml-base/prod}
    assert not [r for r in churn.of_type("aws:iam/role:Role") if r.name.endswith("-exec")]
    ref = churn.one("pulumi:pulumi:StackReference")
    assert ref.name == "acme/ml-base/prod" and churn_out["executionRoleArn"] == STACK_ROLE
    fraud, fraud_out = ran("fraud")  # role: {arn: ...}
    assert not [r for r in fraud.of_type("aws:iam/role:Role") if r.name.endswith("-exec")]
    assert fraud_out["executionRoleArn"] == "arn:aws:iam::123456789012:role/risk-sagemaker-exec"
    assert (
        fraud.one("aws:sagemaker/pipeline:Pipeline").inputs["roleArn"]
        == fraud_out["executionRoleArn"]
    )


@pytest.mark.parametrize("spec", ["churn", "fraud", "demand"])
def test_one_feature_group_per_view_with_mapped_types(spec: str) -> None:
    plan = plan_for(spec)
    groups = {
        g.inputs["featureGroupName"]: plain(g.inputs) for g in ran(spec)[0].of_type(FEATURE_GROUP)
    }
    assert len(groups) == len(plan.features.views)
    expected_type = {
        "int32": "Integral",
        "int64": "Integral",
        "float32": "Fractional",
        "float64": "Fractional",
        "string": "String",
    }
    for view in plan.features.views:
        group = groups[f"{plan.system.name}-{view.id.replace('_', '-')}"]
        entity = next(e for e in plan.features.entities if e.id == view.entity_id)
        source = next(s for s in plan.features.sources if s.id == view.source_id)
        types = {d["featureName"]: d["featureType"] for d in group["featureDefinitions"]}
        assert group["recordIdentifierFeatureName"] == entity.join_keys[0]
        assert types[entity.join_keys[0]] == "Integral"
        assert group["eventTimeFeatureName"] == source.timestamp_field
        assert types[source.timestamp_field] == "String"
        for f in view.fields:
            assert types[f.name] == expected_type[f.dtype], f.name
        assert group["onlineStoreConfig"]["enableOnlineStore"] is True
        assert group["offlineStoreConfig"]["s3StorageConfig"]["s3Uri"].startswith("s3://")


def test_shadow_variant_present_when_rollout_starts_with_shadow() -> None:
    config = ran("fraud")[0].one(ENDPOINT_CONFIG).inputs
    (shadow,) = config["shadowProductionVariants"]
    (primary,) = config["productionVariants"]
    assert shadow["variantName"] == "shadow" and shadow["initialVariantWeight"] == 0.5
    assert primary["initialInstanceCount"] == 3 and primary["instanceType"] == "ml.c6i.2xlarge"
    assert shadow["modelName"] != primary["modelName"]
    models = {m.name for m in ran("fraud")[0].of_type("aws:sagemaker/model:Model")}
    assert models == {"fraud-scorer-champion", "fraud-scorer-challenger"}


def test_no_shadow_variant_without_a_shadow_step() -> None:
    mocks, _ = run_spec("churn", without_shadow(plan_for("churn")))
    assert "shadowProductionVariants" not in mocks.one(ENDPOINT_CONFIG).inputs
    assert [m.name for m in mocks.of_type("aws:sagemaker/model:Model")] == ["churn-champion"]


def test_deployed_pipeline_definition_is_concrete_and_valid() -> None:
    mocks, outputs = ran("churn")
    definition = json.loads(
        mocks.one("aws:sagemaker/pipeline:Pipeline").inputs["pipelineDefinition"]
    )
    assert validate_definition(definition) == []
    text = json.dumps(definition)
    assert "${" not in text and f"s3://{outputs['bucketName']}/runs" in text
    assert STACK_ROLE in text


@pytest.mark.parametrize("spec", ["churn", "fraud", "demand"])
def test_outputs_and_tags(spec: str) -> None:
    mocks, outputs = ran(spec)
    plan = plan_for(spec)
    assert outputs["endpointName"] == plan.endpoint.name
    assert outputs["bucketName"].startswith(plan.system.name)
    assert outputs["pipelineArn"].endswith(f"pipeline/{plan.system.name}-training")
    tagged = [c for c in mocks.created if "tags" in c.inputs]
    assert len(tagged) >= 10
    for c in tagged:
        assert c.inputs["tags"]["owner"] == plan.system.owner, c.name
        assert c.inputs["tags"]["specml:system"] == plan.system.name
        for k, v in plan.system.labels.items():
            assert c.inputs["tags"][k] == v


def test_autoscaling_spans_min_to_max_replicas() -> None:
    mocks = ran("fraud")[0]
    target = mocks.one("aws:appautoscaling/target:Target").inputs
    assert (target["minCapacity"], target["maxCapacity"]) == (3, 12)
    assert target["scalableDimension"] == "sagemaker:variant:DesiredInstanceCount"
    assert target["resourceId"] == "endpoint/fraud-scorer/variant/primary"
    policy = mocks.one("aws:appautoscaling/policy:Policy").inputs
    assert policy["policyType"] == "TargetTrackingScaling"


def test_model_package_group_matches_the_register_steps_environment() -> None:
    group = ran("churn")[0].one("aws:sagemaker/modelPackageGroup:ModelPackageGroup").inputs
    assert group["modelPackageGroupName"] == "churn"


def test_the_plan_is_uploaded_for_the_pipeline_steps() -> None:
    obj = ran("demand")[0].one("aws:s3/bucketObjectv2:BucketObjectv2").inputs
    assert obj["key"] == "specml/plan/plan.json"
    assert obj["content"] == plan_for("demand").to_json()


@pytest.mark.parametrize("spec", ["churn", "fraud", "demand"])
def test_slo_alarms_match_the_spec_and_roll_back_on_slo_breach(spec: str) -> None:
    from specml.targets.sagemaker.naming import Names

    plan = plan_for(spec)
    assert plan.rollout is not None
    prefix, slo = Names.for_plan(plan).prefix, plan.endpoint.slo
    alarms = alarms_by_name(spec)
    rollback = {a["alarmName"] for a in routing_alarms(spec)}
    rolls_back = any(c.kind == "slo_breach" for c in plan.rollout.rollback_when)
    for pct in ("p50", "p95", "p99"):
        ms, name = getattr(slo, f"{pct}_latency_ms"), f"{prefix}-slo-{pct}-latency"
        if ms is None:
            assert name not in alarms
            continue
        alarm = alarms[name].inputs
        assert (alarm["namespace"], alarm["metricName"]) == ("AWS/SageMaker", "ModelLatency")
        assert alarm["extendedStatistic"] == pct
        assert alarm["threshold"] == pytest.approx(ms * 1000)  # ModelLatency is in microseconds
        assert (name in rollback) == rolls_back
    assert slo.error_rate is not None
    errors = alarms[f"{prefix}-slo-error-rate"].inputs
    assert errors["threshold"] == pytest.approx(slo.error_rate)
    assert "metricName" not in errors  # metric math, not a single metric
    names = {q["metric"]["metricName"] for q in errors["metricQueries"] if "metric" in q}
    assert names == {"Invocation5XXErrors", "Invocations"}
    assert (f"{prefix}-slo-error-rate" in rollback) == rolls_back


@pytest.mark.parametrize("spec", ["churn", "fraud", "demand"])
def test_shadow_variant_mirrors_the_leading_shadow_step(spec: str) -> None:
    plan = plan_for(spec)
    assert plan.rollout is not None
    first = plan.rollout.steps[0]
    config = ran(spec)[0].one(ENDPOINT_CONFIG).inputs
    if first.kind != "shadow":
        assert "shadowProductionVariants" not in config
        return
    (shadow,) = config["shadowProductionVariants"]
    assert shadow["initialVariantWeight"] == pytest.approx(first.shadow_sample_percent / 100)
    assert shadow["instanceType"] == config["productionVariants"][0]["instanceType"]


def _snake_keys(value: Any, path: str) -> list[str]:
    """Keys pulumi-aws did not translate to camelCase (user-keyed maps are skipped)."""
    out: list[str] = []
    if isinstance(value, dict):
        for key, inner in value.items():
            if "_" in key and not key.startswith("4dabf18193072939"):  # the secret signature key
                out.append(f"{path}.{key}")
            if key not in ("tags", "environment", "dimensions"):
                out += _snake_keys(inner, f"{path}.{key}")
    elif isinstance(value, list):
        out += [k for i, inner in enumerate(value) for k in _snake_keys(inner, f"{path}[{i}]")]
    return out


@pytest.mark.parametrize("spec", ["churn", "fraud", "demand"])
def test_every_nested_input_key_is_a_pulumi_aws_property(spec: str) -> None:
    """Nested args are plain dicts: pulumi-aws renames the keys it knows to camelCase, so a
    misspelt key (`termination_wait_in_second`) would survive in snake_case and be dropped."""
    unknown = [k for c in ran(spec)[0].created for k in _snake_keys(c.inputs, c.name)]
    assert unknown == []


def test_models_serve_the_uncompressed_onnx_export_folder() -> None:
    mocks, outputs = ran("fraud")
    by_variant = {
        m.inputs["tags"]["specml:variant"]: m.inputs["primaryContainer"]
        for m in mocks.of_type("aws:sagemaker/model:Model")
    }
    plan = plan_for("fraud")
    for variant, version in (
        ("champion", plan.registry.champion_alias),
        ("challenger", plan.registry.challenger_alias),
    ):
        (source,) = by_variant[variant]["modelDataSource"]["s3DataSources"]
        assert source == {
            "s3Uri": f"s3://{outputs['bucketName']}/models/{plan.registry.name}/{version}/",
            "s3DataType": "S3Prefix",
            "compressionType": "None",
        }
        assert "modelDataUrl" not in by_variant[variant]
