"""The closed loop on AWS under Pulumi mocks: retraining schedules and alarm rules start the
pipeline, a scheduled drift job feeds the drift alarms, each with a least-privilege role."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import pytest
from sagemaker_testlib import Created, RecordingMocks, plain, run_spec
from specml.targets.sagemaker.schedules import aws_cron

SCHEDULE = "aws:scheduler/schedule:Schedule"
RULE = "aws:cloudwatch/eventRule:EventRule"
TARGET = "aws:cloudwatch/eventTarget:EventTarget"
ROLE, POLICY = "aws:iam/role:Role", "aws:iam/rolePolicy:RolePolicy"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"


@cache
def ran(spec: str) -> tuple[RecordingMocks, dict[str, Any]]:
    return run_spec(spec)


def _named(mocks: RecordingMocks, type_token: str, suffix: str) -> Created:
    (found,) = [c for c in mocks.of_type(type_token) if c.name.endswith(suffix)]
    return found


def _pipeline_arn(mocks: RecordingMocks) -> str:
    return mocks.one("aws:sagemaker/pipeline:Pipeline").state["arn"]


def _statements(mocks: RecordingMocks, role_suffix: str) -> list[dict[str, Any]]:
    return json.loads(plain(_named(mocks, POLICY, role_suffix).inputs["policy"]))["Statement"]


@pytest.mark.parametrize(
    ("cron", "expected"),
    [
        ("0 3 * * 1", "cron(0 3 ? * MON *)"),  # AWS numbers days 1=SUN: names avoid the trap
        ("0 2 * * *", "cron(0 2 * * ? *)"),
        ("30 4 1 * *", "cron(30 4 1 * ? *)"),
        ("*/15 8-18 * * 1-5", "cron(*/15 8-18 ? * MON-FRI *)"),
        ("0 0 * * 0,6", "cron(0 0 ? * SUN,SAT *)"),
        ("@weekly", "cron(0 0 ? * SUN *)"),
        ("0 0 1 * 1", None),  # both day fields: AWS cannot say it
    ],
)
def test_cron_becomes_eventbridge_cron(cron: str, expected: str | None) -> None:
    assert aws_cron(cron) == expected


def test_schedule_starts_the_pipeline_with_a_role_that_can_do_only_that() -> None:
    mocks, _ = ran("churn")  # retraining: schedule "0 3 * * 1"
    (schedule,) = [s for s in mocks.of_type(SCHEDULE) if "retrain" in s.name]
    assert schedule.inputs["scheduleExpression"] == "cron(0 3 ? * MON *)"
    assert schedule.inputs["scheduleExpressionTimezone"] == "UTC"
    target = schedule.inputs["target"]
    assert target["arn"] == _pipeline_arn(mocks)
    role = _named(mocks, ROLE, "-retrain-scheduler")
    assert target["roleArn"] == role.state["arn"]
    trust = json.loads(plain(role.inputs["assumeRolePolicy"]))["Statement"]
    assert [(s["Principal"], s["Condition"]) for s in trust] == [
        (
            {"Service": "scheduler.amazonaws.com"},
            {"StringEquals": {"aws:SourceAccount": "123456789012"}},
        )
    ]
    assert _statements(mocks, "-retrain-scheduler") == [
        {
            "Sid": "StartThisPipeline",
            "Effect": "Allow",
            "Action": ["sagemaker:StartPipelineExecution"],
            "Resource": [_pipeline_arn(mocks)],
        }
    ]


def test_alert_trigger_is_a_rule_on_its_alarm_entering_alarm() -> None:
    mocks, _ = ran("churn")  # retraining: {alert: feature_drift}
    rule = _named(mocks, RULE, "-retrain-on-feature_drift")
    pattern = json.loads(rule.inputs["eventPattern"])
    assert pattern == {
        "source": ["aws.cloudwatch"],
        "detail-type": ["CloudWatch Alarm State Change"],
        "detail": {"alarmName": ["churn-feature-drift-critical"], "state": {"value": ["ALARM"]}},
    }
    alarms = {a.inputs["name"] for a in mocks.of_type(ALARM)}
    assert set(pattern["detail"]["alarmName"]) <= alarms  # the rule watches an alarm that exists
    target = _named(mocks, TARGET, "-retrain-on-feature_drift").inputs
    assert target["arn"] == _pipeline_arn(mocks)
    assert target["roleArn"] == _named(mocks, ROLE, "-retrain-events").state["arn"]
    (statement,) = _statements(mocks, "-retrain-events")
    assert statement["Action"] == ["sagemaker:StartPipelineExecution"]
    trust = json.loads(plain(_named(mocks, ROLE, "-retrain-events").inputs["assumeRolePolicy"]))
    assert trust["Statement"][0]["Principal"] == {"Service": "events.amazonaws.com"}


def test_drift_job_is_scheduled_on_the_captured_data_and_feeds_the_drift_alarms() -> None:
    mocks, outputs = ran("churn")
    config = mocks.one("aws:sagemaker/endpointConfiguration:EndpointConfiguration").inputs
    capture = config["dataCaptureConfig"]
    assert capture["enableCapture"] and capture["initialSamplingPercentage"] == 100
    assert capture["destinationS3Uri"] == f"s3://{outputs['bucketName']}/data-capture"
    schedule = _named(mocks, SCHEDULE, "-drift")
    assert schedule.inputs["target"]["arn"] == (
        "arn:aws:scheduler:::aws-sdk:sagemaker:createProcessingJob"
    )
    job = json.loads(schedule.inputs["target"]["input"])
    assert job["ProcessingJobName"].endswith("-drift-<aws.scheduler.execution-id>")
    assert len(job["ProcessingJobName"].replace("<aws.scheduler.execution-id>", "x" * 36)) <= 63
    args = job["AppSpecification"]["ContainerArguments"]
    assert job["AppSpecification"]["ContainerEntrypoint"][-1] == "drift-job"
    assert args[args.index("--capture-uri") + 1] == (
        f"s3://{outputs['bucketName']}/data-capture/churn/"
    )
    assert args[args.index("--reference-uri") + 1].startswith(
        f"s3://{outputs['bucketName']}/models/"
    )
    assert job["RoleArn"] == outputs["executionRoleArn"]
    assert job["Tags"] == [{"Key": "specml:system", "Value": "churn"}]
    period = int(schedule.inputs["scheduleExpression"].removeprefix("rate(").split()[0]) * 60
    statements = {s["Sid"]: s for s in _statements(mocks, "-drift-scheduler")}
    assert statements["CreateTaggedDriftJobs"]["Condition"] == {
        "StringEquals": {"aws:RequestTag/specml:system": "churn"}
    }
    assert statements["CreateTaggedDriftJobs"]["Resource"][0].endswith(
        ":processing-job/churn-drift-*"
    )
    assert statements["PassExecutionRole"]["Resource"] == [outputs["executionRoleArn"]]
    assert statements["PassExecutionRole"]["Condition"] == {
        "StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}
    }
    # the alarms read what the job publishes, per period, at the threshold (>=)
    critical = {a.inputs["name"]: a.inputs for a in mocks.of_type(ALARM)}[
        "churn-feature-drift-critical"
    ]
    assert (critical["namespace"], critical["metricName"]) == ("specml/Drift", "AlertValue")
    assert critical["dimensions"] == {"System": "churn", "Alert": "feature_drift"}
    assert critical["comparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert critical["threshold"] == 0.2 and critical["period"] == period
    assert critical["statistic"] == "Maximum"


def test_a_drift_alert_that_rolls_back_joins_the_auto_rollback_alarms() -> None:
    mocks, _ = ran("churn")  # rollout.rollback_when: [slo_breach, {alert: feature_drift}]
    endpoint = mocks.one("aws:sagemaker/endpoint:Endpoint").inputs
    named = [
        a["alarmName"] for a in endpoint["deploymentConfig"]["autoRollbackConfiguration"]["alarms"]
    ]
    assert "churn-feature-drift-critical" in named and "churn-feature-drift-warn" not in named
    assert len(named) <= 10


def test_triggers_without_an_aws_equivalent_create_nothing_for_them() -> None:
    mocks, _ = ran("fraud")  # alert trigger on precision_drop (no metric), metric_drop, schedule
    assert not mocks.of_type(RULE) and not mocks.of_type(TARGET)
    (schedule,) = [s for s in mocks.of_type(SCHEDULE) if "retrain" in s.name]
    assert schedule.inputs["scheduleExpression"] == "cron(0 2 * * ? *)"
