"""Least privilege and secrets: every ARN the execution policy names, and no secret in plaintext."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from sagemaker_testlib import (
    ACCOUNT,
    IMAGE,
    KMS_ARN,
    WEBHOOK,
    RecordingMocks,
    plain,
    plan_for,
    run_spec,
    secret_value,
)
from specml.compiler.ir import Plan
from specml.targets.sagemaker.iam import UNSCOPABLE_ACTIONS

_SIG_KEY, _SECRET_SIG = "4dabf18193072939515e22adb298388d", "1b47061264138c4ac30d75fd1eb44270"


def with_created_role(plan: Plan) -> Plan:
    """The same Plan, but the program creates the execution role (no arn / from_stack)."""
    sm = plan.targets.sagemaker
    assert sm is not None
    sm = sm.model_copy(update={"role_arn": None, "role_from_stack": None})
    return plan.model_copy(update={"targets": plan.targets.model_copy(update={"sagemaker": sm})})


def allowed_resources(plan: Plan, bucket: str, role_arn: str) -> list[str]:
    """Regexes for every resource the policy may name: this system's, nothing else."""
    sm = plan.targets.sagemaker
    assert sm is not None
    prefix = re.escape(plan.system.name)
    region, acct = re.escape(sm.region), ACCOUNT
    smarn = f"arn:aws:sagemaker:{region}:{acct}"
    return [
        re.escape(f"arn:aws:s3:::{bucket}"),
        re.escape(f"arn:aws:s3:::{bucket}/*"),
        re.escape(role_arn),
        f"{smarn}:(feature-group|pipeline)/{prefix}-\\*",
        f"{smarn}:pipeline/{prefix}-\\*/execution/\\*",
        f"{smarn}:model-package(-group)?/{prefix}\\*",
        f"{smarn}:(processing|training)-job/\\*",  # only with the system-tag condition (below)
        f"arn:aws:glue:{region}:{acct}:(catalog|database/sagemaker_featurestore)",
        f"arn:aws:glue:{region}:{acct}:table/sagemaker_featurestore/{prefix.replace('-', '_')}\\*",
        f"arn:aws:logs:{region}:{acct}:log-group:/aws/sagemaker/\\*",
        re.escape("arn:aws:ecr:eu-west-1:123456789012:repository/specml-runtime"),
        re.escape(KMS_ARN),
        re.escape("*"),
    ]


def policy_of(mocks: RecordingMocks) -> dict[str, Any]:
    raw = mocks.execution("aws:iam/rolePolicy:RolePolicy").inputs["policy"]
    return json.loads(plain(raw))


@pytest.mark.parametrize("spec", ["demand", "fraud"])
def test_execution_policy_names_only_this_systems_resources(spec: str) -> None:
    plan = with_created_role(plan_for(spec)) if spec == "fraud" else plan_for(spec)
    mocks, outputs = run_spec(spec, plan)
    policy = policy_of(mocks)
    patterns = allowed_resources(plan, outputs["bucketName"], outputs["executionRoleArn"])
    named: set[str] = set()
    for st in policy["Statement"]:
        assert st["Effect"] == "Allow"
        for action in st["Action"]:
            assert not action.endswith("*"), f"wildcard action {action}"
        for resource in st["Resource"]:
            named.add(resource)
            assert any(re.fullmatch(p, resource) for p in patterns), resource
            if resource == "*":
                assert set(st["Action"]) <= UNSCOPABLE_ACTIONS, st
            if resource.endswith("-job/*"):
                (cond,) = st["Condition"].values()
                assert set(cond.values()) == {plan.system.name}, st
            if resource.startswith("arn:aws:s3:"):
                assert resource.split(":::")[1].split("/")[0] == outputs["bucketName"]
    bucket_arn = f"arn:aws:s3:::{outputs['bucketName']}"
    assert {bucket_arn, f"{bucket_arn}/*"} <= named
    metrics = next(st for st in policy["Statement"] if "cloudwatch:PutMetricData" in st["Action"])
    assert "cloudwatch:namespace" in metrics["Condition"]["StringLike"]
    actions = {a for st in policy["Statement"] for a in st["Action"]}
    assert {"logs:PutLogEvents", "cloudwatch:PutMetricData", "s3:GetObject"} <= actions
    assert ("kms:Decrypt" in actions) == (spec == "fraud")  # the spec's key, and only then
    pass_role = next(st for st in policy["Statement"] if st["Action"] == ["iam:PassRole"])
    assert pass_role["Resource"] == [outputs["executionRoleArn"]]


def test_execution_policy_pulls_only_the_spec_image_repository() -> None:
    mocks, _ = run_spec("demand")
    pulls = [st for st in policy_of(mocks)["Statement"] if "ecr:BatchGetImage" in st["Action"]]
    assert [st["Resource"] for st in pulls] == [
        [f"arn:aws:ecr:eu-west-1:{ACCOUNT}:repository/specml-runtime"]
    ]
    assert IMAGE.startswith(f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com/specml-runtime:")


def plaintext(value: Any, needle: str, path: str = "", secret: bool = False) -> list[str]:
    """Paths where `needle` occurs in `value` outside a Pulumi secret."""
    if isinstance(value, dict):
        if value.get(_SIG_KEY) == _SECRET_SIG:
            return plaintext(value.get("value"), needle, path, True)
        return [h for k, v in value.items() for h in plaintext(v, needle, f"{path}.{k}", secret)]
    if isinstance(value, list):
        return [
            h for i, v in enumerate(value) for h in plaintext(v, needle, f"{path}[{i}]", secret)
        ]
    return [path] if isinstance(value, str) and needle in value and not secret else []


def test_secrets_reach_resources_only_as_pulumi_secrets() -> None:
    """The KMS key and webhook come from config secrets; every input holding them stays secret."""
    mocks, outputs = run_spec("fraud", with_created_role(plan_for("fraud")))
    holders = {"kms": set(), "webhook": set()}
    for c in mocks.created:
        for label, needle in (("kms", KMS_ARN), ("webhook", WEBHOOK)):
            assert plaintext(c.inputs, needle) == [], (c.type, c.name, label)
            if needle in json.dumps(plain(c.inputs)):
                holders[label].add(c.type)
    # ... and they did reach the resources that need them (so the check above is not vacuous).
    assert {
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
        "aws:sagemaker/featureGroup:FeatureGroup",
        "aws:sagemaker/pipeline:Pipeline",
        "aws:iam/rolePolicy:RolePolicy",
        "aws:sns/topic:Topic",
        "aws:sagemaker/endpointConfiguration:EndpointConfiguration",
    } <= holders["kms"]
    assert holders["webhook"] == {"aws:sns/topicSubscription:TopicSubscription"}
    sub = mocks.one("aws:sns/topicSubscription:TopicSubscription").inputs
    assert secret_value(sub["endpoint"]) == WEBHOOK
    assert all(KMS_ARN not in json.dumps(v) for v in outputs.values())
    assert KMS_ARN not in plan_for("fraud").to_json() and WEBHOOK not in plan_for("fraud").to_json()


def test_the_plaintext_detector_finds_plain_values() -> None:
    wrapped = {_SIG_KEY: _SECRET_SIG, "value": {"k": KMS_ARN}}
    assert plaintext({"a": [wrapped, {"b": f"x{KMS_ARN}"}]}, KMS_ARN) == [".a[1].b"]
