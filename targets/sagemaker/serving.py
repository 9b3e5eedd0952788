"""Serving resources: Models, EndpointConfig (with shadow variant), Endpoint with blue/green
deployment guardrails, CloudWatch alarms wired into auto-rollback, and autoscaling."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import pulumi
import pulumi_aws as aws
from specml.targets.sagemaker.alarms import (
    DRIFT_METRIC,
    DRIFT_NAMESPACE,
    NAMESPACE,
    AlarmSpec,
    alarm_specs,
    rollback_alarm_names,
)
from specml.targets.sagemaker.context import (
    CONFIG_INVOCATIONS_TARGET,
    CONFIG_MODEL_VERSION,
    CONFIG_SHADOW_VERSION,
    CONFIG_WEBHOOK,
    DEFAULT_INVOCATIONS_TARGET,
    Context,
)
from specml.targets.sagemaker.naming import (
    PRODUCTION_VARIANT,
    SHADOW_VARIANT,
    container_environment,
    tags,
)
from specml.targets.sagemaker.rollout import traffic_routing


def model_url(
    ctx: Context, version_key: str, default_version: str, bucket: aws.s3.Bucket
) -> pulumi.Output[str]:
    """The pipeline's ONNX export folder of one version (model.onnx, serving.json, the drift
    reference), served uncompressed: SageMaker copies the prefix to /opt/ml/model. The trailing
    '/' is required for an S3Prefix source."""
    version = ctx.config.get(version_key) or default_version
    return pulumi.Output.concat(
        "s3://", bucket.bucket, f"/models/{ctx.plan.registry.name}/{version}/"
    )


def champion_model_url(ctx: Context, bucket: aws.s3.Bucket) -> pulumi.Output[str]:
    """Where the champion's model folder is (what the drift job compares with)."""
    return model_url(ctx, CONFIG_MODEL_VERSION, ctx.plan.registry.champion_alias, bucket)


def _model(
    ctx: Context,
    variant: str,
    version_key: str,
    default_version: str,
    bucket: aws.s3.Bucket,
    role_arn: pulumi.Output[str],
    image: pulumi.Output[str],
) -> Any:
    url = model_url(ctx, version_key, default_version, bucket)
    env = container_environment(ctx.plan)
    # The name changes with what is served, so a new model version gets a new Model
    # (and EndpointConfig) and the endpoint update runs the blue/green policy.
    name = pulumi.Output.all(image, url).apply(
        lambda a: (
            f"{ctx.names.prefix}-{variant}-"
            + (
                hashlib.sha256(
                    "|".join([*a, json.dumps(env, sort_keys=True)]).encode()
                ).hexdigest()[:10]
            )
        )
    )
    return aws.sagemaker.Model(
        f"{ctx.names.prefix}-{variant}",
        name=name,
        execution_role_arn=role_arn,
        primary_container={
            "image": image,
            "environment": env,
            "model_data_source": {
                "s3_data_sources": [
                    {"s3_uri": url, "s3_data_type": "S3Prefix", "compression_type": "None"}
                ]
            },
        },
        tags=tags(ctx.plan, **{"specml:variant": variant}),
        opts=ctx.opts,
    )


def _alarm(ctx: Context, spec: AlarmSpec, endpoint_name: str, actions: list[Any]) -> Any:
    dims = {"EndpointName": endpoint_name, "VariantName": PRODUCTION_VARIANT}
    common: dict[str, Any] = dict(
        name=spec.name,
        alarm_description=spec.description,
        comparison_operator=spec.comparison,
        threshold=spec.threshold,
        evaluation_periods=spec.evaluation_periods,
        datapoints_to_alarm=spec.evaluation_periods,
        treat_missing_data="notBreaching",
        alarm_actions=actions,
        ok_actions=actions,
        tags=spec.tags,
        opts=ctx.opts,
    )
    if spec.kind == "drift":
        return aws.cloudwatch.MetricAlarm(
            spec.name,
            namespace=DRIFT_NAMESPACE,
            metric_name=DRIFT_METRIC,
            statistic="Maximum",
            period=spec.period_seconds,
            dimensions={"System": ctx.plan.system.name, "Alert": spec.source},
            **common,
        )
    if spec.kind == "latency":
        return aws.cloudwatch.MetricAlarm(
            spec.name,
            namespace=NAMESPACE,
            metric_name="ModelLatency",
            extended_statistic=spec.percentile,
            period=spec.period_seconds,
            dimensions=dims,
            **common,
        )

    def metric(qid: str, name: str) -> Any:  # a MetricAlarmMetricQueryArgsDict
        return {
            "id": qid,
            "return_data": False,
            "metric": {
                "namespace": NAMESPACE,
                "metric_name": name,
                "dimensions": dims,
                "period": spec.period_seconds,
                "stat": "Sum",
            },
        }

    return aws.cloudwatch.MetricAlarm(
        spec.name,
        metric_queries=[
            metric("errors", "Invocation5XXErrors"),
            metric("invocations", "Invocations"),
            {
                "id": "error_rate",
                "expression": "IF(invocations > 0, errors / invocations, 0)",
                "label": "5XX error ratio",
                "return_data": True,
            },
        ],
        **common,
    )


def _endpoint_config(
    ctx: Context, champion: Any, challenger: Any | None, shadow_weight: float, bucket: aws.s3.Bucket
) -> aws.sagemaker.EndpointConfiguration:
    ep, s = ctx.plan.endpoint, ctx.settings
    variant = {
        "variant_name": PRODUCTION_VARIANT,
        "model_name": champion.name,
        "initial_instance_count": ep.min_replicas,
        "instance_type": s.instance_type,
        "initial_variant_weight": 1.0,
    }
    args: dict[str, Any] = {"production_variants": [variant]}
    if challenger is not None:
        # The shadow copy of `shadow_weight` of requests goes to the challenger; users only
        # ever get the production variant's answers.
        args["shadow_production_variants"] = [
            {
                "variant_name": SHADOW_VARIANT,
                "model_name": challenger.name,
                "initial_instance_count": max(1, math.ceil(ep.min_replicas * shadow_weight)),
                "instance_type": s.instance_type,
                "initial_variant_weight": shadow_weight,
            }
        ]
    if any(a.kind in ("drift", "prediction_drift") for a in ctx.plan.alerts):
        # Drift alerts are evaluated offline on captured requests/responses.
        args["data_capture_config"] = {
            "enable_capture": True,
            "initial_sampling_percentage": 100,
            "destination_s3_uri": pulumi.Output.concat("s3://", bucket.bucket, "/data-capture"),
            "capture_options": [{"capture_mode": "Input"}, {"capture_mode": "Output"}],
            **({"kms_key_id": ctx.kms_key} if ctx.kms_key is not None else {}),
        }
    if ctx.kms_key is not None:
        args["kms_key_arn"] = ctx.kms_key
    return aws.sagemaker.EndpointConfiguration(
        f"{ctx.names.prefix}-endpoint-config",
        name_prefix=f"{ctx.names.prefix}-",
        tags=ctx.tags,
        opts=ctx.opts,
        **args,
    )


def _deployment_config(ctx: Context, rollback_alarms: list[str]) -> Any:
    """The EndpointDeploymentConfigArgsDict: blue/green routing, baking and auto-rollback."""
    routing, _ = traffic_routing(ctx.plan)
    traffic: dict[str, Any] = {
        "type": routing.type,
        "wait_interval_in_seconds": routing.wait_interval_seconds,
    }
    size = {"type": "CAPACITY_PERCENT", "value": routing.step_percent}
    if routing.type == "CANARY":
        traffic["canary_size"] = size
    elif routing.type == "LINEAR":
        traffic["linear_step_size"] = size
    config: dict[str, Any] = {
        "blue_green_update_policy": {
            "traffic_routing_configuration": traffic,
            "termination_wait_in_seconds": routing.termination_wait_seconds,
            "maximum_execution_timeout_in_seconds": routing.maximum_execution_timeout_seconds,
        }
    }
    if rollback_alarms:
        config["auto_rollback_configuration"] = {
            "alarms": [{"alarm_name": n} for n in rollback_alarms]
        }
    return config


def _autoscaling(ctx: Context, endpoint: aws.sagemaker.Endpoint) -> None:
    ep = ctx.plan.endpoint
    if ep.max_replicas <= ep.min_replicas:
        return
    resource_id = pulumi.Output.concat("endpoint/", endpoint.name, f"/variant/{PRODUCTION_VARIANT}")
    target = aws.appautoscaling.Target(
        f"{ctx.names.prefix}-scaling",
        service_namespace="sagemaker",
        resource_id=resource_id,
        scalable_dimension="sagemaker:variant:DesiredInstanceCount",
        min_capacity=ep.min_replicas,
        max_capacity=ep.max_replicas,
        tags=ctx.tags,
        opts=ctx.opts,
    )
    per_instance = ctx.config.get_float(CONFIG_INVOCATIONS_TARGET) or DEFAULT_INVOCATIONS_TARGET
    aws.appautoscaling.Policy(
        f"{ctx.names.prefix}-scaling",
        policy_type="TargetTrackingScaling",
        service_namespace=target.service_namespace,
        resource_id=target.resource_id,
        scalable_dimension=target.scalable_dimension,
        target_tracking_scaling_policy_configuration={
            "target_value": per_instance,
            "scale_in_cooldown": 300,
            "scale_out_cooldown": 60,
            "predefined_metric_specification": {
                "predefined_metric_type": "SageMakerVariantInvocationsPerInstance"
            },
        },
        opts=ctx.opts,
    )


def build_serving(
    ctx: Context, bucket: aws.s3.Bucket, role_arn: pulumi.Output[str], image: pulumi.Output[str]
) -> tuple[aws.sagemaker.Endpoint, list[Any]]:
    """Models, endpoint config, alarms, endpoint and autoscaling; returns endpoint and alarms."""
    plan, names = ctx.plan, ctx.names
    routing, _ = traffic_routing(plan)
    champion = _model(
        ctx, "champion", CONFIG_MODEL_VERSION, plan.registry.champion_alias, bucket, role_arn, image
    )
    challenger = None
    if routing.shadow is not None:
        challenger = _model(
            ctx,
            "challenger",
            CONFIG_SHADOW_VERSION,
            plan.registry.challenger_alias,
            bucket,
            role_arn,
            image,
        )
    weight = routing.shadow.sample_percent / 100.0 if routing.shadow else 0.0
    endpoint_config = _endpoint_config(ctx, champion, challenger, weight, bucket)

    actions: list[Any] = []
    if plan.notifications.webhook_url is not None:
        topic = aws.sns.Topic(
            f"{names.prefix}-alerts", tags=ctx.tags, opts=ctx.opts, kms_master_key_id=ctx.kms_key
        )
        aws.sns.TopicSubscription(
            f"{names.prefix}-webhook",
            topic=topic.arn,
            protocol="https",
            endpoint=ctx.config.require_secret(CONFIG_WEBHOOK),
            opts=ctx.opts,
        )
        actions = [topic.arn]
    specs, _ = alarm_specs(plan, names)
    alarms = [_alarm(ctx, spec, names.endpoint, actions) for spec in specs]
    endpoint = aws.sagemaker.Endpoint(
        f"{names.prefix}-endpoint",
        name=names.endpoint,
        endpoint_config_name=endpoint_config.name,
        deployment_config=_deployment_config(ctx, rollback_alarm_names(specs)),
        tags=ctx.tags,
        opts=ctx.child(depends_on=alarms),
    )
    _autoscaling(ctx, endpoint)
    return endpoint, alarms
