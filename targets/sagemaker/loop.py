"""The loop on AWS: retraining started by schedules and alarms, drift computed on a schedule.

- `retraining.triggers` schedules: EventBridge Scheduler schedules whose target is the SageMaker
  pipeline (StartPipelineExecution), cron converted to AWS's six-field form;
- alert triggers: EventBridge rules on the alert's alarm entering ALARM, targeting the pipeline;
- drift alerts: an EventBridge Scheduler schedule creates a processing job every drift period
  (universal target sagemaker:CreateProcessingJob) running `python -m specml.runtime drift-job`
  on the endpoint's data capture; it publishes the figures the drift alarms read.
Each service gets its own role, allowed exactly that: start this pipeline, or create tagged
processing jobs with the execution role. What EventBridge cannot express is declared.
"""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pulumi_aws as aws
from specml.targets.sagemaker.alarms import alarm_specs, drift_period
from specml.targets.sagemaker.context import Context
from specml.targets.sagemaker.naming import SYSTEM_TAG, sm_name
from specml.targets.sagemaker.schedules import aws_cron

DRIFT_JOB_INSTANCE = "ml.m5.large"
PROCESSING_TARGET = "arn:aws:scheduler:::aws-sdk:sagemaker:createProcessingJob"


def _service_role(ctx: Context, name: str, service: str, statements: list[Any]) -> aws.iam.Role:
    assume = ctx.account.apply(
        lambda account: json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": service},
                        "Action": "sts:AssumeRole",
                        # the confused-deputy guard: only this account's schedules/rules
                        "Condition": {"StringEquals": {"aws:SourceAccount": account}},
                    }
                ],
            }
        )
    )
    role = aws.iam.Role(
        f"{ctx.names.prefix}-{name}", assume_role_policy=assume, tags=ctx.tags, opts=ctx.opts
    )
    policy = pulumi.Output.json_dumps({"Version": "2012-10-17", "Statement": statements})
    aws.iam.RolePolicy(f"{ctx.names.prefix}-{name}", role=role.id, policy=policy, opts=ctx.opts)
    return role


def _start_pipeline(pipeline: aws.sagemaker.Pipeline) -> dict[str, Any]:
    return {
        "Sid": "StartThisPipeline",
        "Effect": "Allow",
        "Action": ["sagemaker:StartPipelineExecution"],
        "Resource": [pipeline.arn],
    }


def _retraining(ctx: Context, pipeline: aws.sagemaker.Pipeline) -> None:
    plan, p = ctx.plan, ctx.names.prefix
    assert plan.retraining is not None
    crons = [
        (i, aws_cron(t.cron or ""))
        for i, t in enumerate(plan.retraining.triggers)
        if t.kind == "schedule"
    ]
    crons = [(i, c) for i, c in crons if c is not None]
    if crons:
        role = _service_role(
            ctx, "retrain-scheduler", "scheduler.amazonaws.com", [_start_pipeline(pipeline)]
        )
        for i, expression in crons:
            aws.scheduler.Schedule(
                f"{p}-retrain-{i}",
                name=sm_name(p, "retrain", str(i)),
                schedule_expression=expression,
                schedule_expression_timezone="UTC",
                flexible_time_window={"mode": "OFF"},
                target={"arn": pipeline.arn, "role_arn": role.arn},
                opts=ctx.opts,
            )
    specs = alarm_specs(plan)[0]

    def alarm_names(alert_id: str | None) -> list[str]:
        """The alert's critical alarm (the level local triggers act on), else its warning one."""
        mine = [s for s in specs if s.source == alert_id]
        critical = [s.name for s in mine if s.severity == "critical"]
        return critical or [s.name for s in mine]

    wanted = [
        (t.alert_id, alarm_names(t.alert_id))
        for t in plan.retraining.triggers
        if t.kind == "alert" and alarm_names(t.alert_id)
    ]
    if not wanted:
        return
    role = _service_role(ctx, "retrain-events", "events.amazonaws.com", [_start_pipeline(pipeline)])
    for alert_id, names in wanted:
        rule = aws.cloudwatch.EventRule(
            f"{p}-retrain-on-{alert_id}",
            name=sm_name(p, "retrain-on", alert_id or ""),
            description=f"retraining.triggers: alert {alert_id} -> start the pipeline",
            event_pattern=json.dumps(
                {
                    "source": ["aws.cloudwatch"],
                    "detail-type": ["CloudWatch Alarm State Change"],
                    "detail": {"alarmName": names, "state": {"value": ["ALARM"]}},
                },
                sort_keys=True,
            ),
            tags=ctx.tags,
            opts=ctx.opts,
        )
        aws.cloudwatch.EventTarget(
            f"{p}-retrain-on-{alert_id}",
            rule=rule.name,
            arn=pipeline.arn,
            role_arn=role.arn,
            sagemaker_pipeline_target={"pipeline_parameter_lists": []},
            opts=ctx.opts,
        )


def _drift_job(
    ctx: Context,
    bucket: aws.s3.Bucket,
    role_arn: pulumi.Output[str],
    image: pulumi.Output[str],
    model_url: pulumi.Output[str],
) -> None:
    from specml.targets.sagemaker.pipeline_definition import PLAN_KEY

    plan, p = ctx.plan, ctx.names.prefix
    sm = pulumi.Output.concat(
        "arn:", ctx.partition, ":sagemaker:", ctx.settings.region, ":", ctx.account
    )
    role = _service_role(
        ctx,
        "drift-scheduler",
        "scheduler.amazonaws.com",
        [
            {
                "Sid": "CreateTaggedDriftJobs",
                "Effect": "Allow",
                "Action": ["sagemaker:CreateProcessingJob", "sagemaker:AddTags"],
                "Resource": [pulumi.Output.concat(sm, f":processing-job/{p[:20]}-drift-*")],
                "Condition": {"StringEquals": {f"aws:RequestTag/{SYSTEM_TAG}": plan.system.name}},
            },
            {
                "Sid": "PassExecutionRole",
                "Effect": "Allow",
                "Action": ["iam:PassRole"],
                "Resource": [role_arn],
                "Condition": {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
            },
        ],
    )
    capture = pulumi.Output.concat("s3://", bucket.bucket, f"/data-capture/{ctx.names.endpoint}/")
    plan_uri = pulumi.Output.concat("s3://", bucket.bucket, f"/{PLAN_KEY}")
    job = pulumi.Output.all(image, role_arn, capture, plan_uri, model_url).apply(
        lambda a: json.dumps(
            {
                # the scheduler fills in a fresh id per run: job names are unique
                "ProcessingJobName": f"{p[:20]}-drift-<aws.scheduler.execution-id>",
                "RoleArn": a[1],
                "AppSpecification": {
                    "ImageUri": a[0],
                    "ContainerEntrypoint": ["python", "-m", "specml.runtime", "drift-job"],
                    "ContainerArguments": [
                        "--plan-uri",
                        a[3],
                        "--capture-uri",
                        a[2],
                        "--reference-uri",
                        a[4],
                        "--region",
                        ctx.settings.region,
                    ],
                },
                "ProcessingResources": {
                    "ClusterConfig": {
                        "InstanceCount": 1,
                        "InstanceType": DRIFT_JOB_INSTANCE,
                        "VolumeSizeInGB": 30,
                    }
                },
                "StoppingCondition": {"MaxRuntimeInSeconds": drift_period(plan)},
                "Tags": [{"Key": SYSTEM_TAG, "Value": plan.system.name}],
            },
            sort_keys=True,
        )
    )
    aws.scheduler.Schedule(
        f"{p}-drift",
        name=sm_name(p, "drift"),
        schedule_expression=f"rate({drift_period(plan) // 60} minutes)",
        flexible_time_window={"mode": "OFF"},
        target={"arn": PROCESSING_TARGET, "role_arn": role.arn, "input": job},
        opts=ctx.opts,
    )


def build_loop(
    ctx: Context,
    bucket: aws.s3.Bucket,
    role_arn: pulumi.Output[str],
    image: pulumi.Output[str],
    pipeline: aws.sagemaker.Pipeline,
    model_url: pulumi.Output[str],
) -> None:
    """Retraining schedules and alarm rules, and the drift job's schedule, where the Plan has them."""
    if ctx.plan.retraining is not None:
        _retraining(ctx, pipeline)
    if any(a.kind in ("drift", "prediction_drift") for a in ctx.plan.alerts):
        _drift_job(ctx, bucket, role_arn, image, model_url)
