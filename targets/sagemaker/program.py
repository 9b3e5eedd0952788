"""The Pulumi program: build this system's AWS resources from the Plan's canonical JSON.

The emitted `__main__.py` only calls `build(plan_json)`; everything here is importable and
runs under `pulumi.runtime.set_mocks` in the tests.
"""

from __future__ import annotations

import json
from typing import Any, cast

import pulumi
import pulumi_aws as aws
from specml.compiler.ir import Plan
from specml.targets.sagemaker import iam
from specml.targets.sagemaker.context import (
    CONFIG_IMAGE,
    CONFIG_KMS_KEY,
    CONFIG_ROLE_OUTPUT,
    DEFAULT_ROLE_OUTPUT,
    Context,
    settings_of,
)
from specml.targets.sagemaker.features import feature_group_specs
from specml.targets.sagemaker.loop import build_loop
from specml.targets.sagemaker.naming import Names, tags
from specml.targets.sagemaker.pipeline_definition import (
    PLAN_KEY,
    DeployRefs,
    build_definition,
    definition_json,
)
from specml.targets.sagemaker.serving import build_serving, champion_model_url


def _bucket(ctx: Context) -> aws.s3.Bucket:
    p = ctx.names.prefix
    bucket = aws.s3.Bucket(f"{p}-artifacts", tags=ctx.tags, opts=ctx.opts)
    aws.s3.BucketVersioning(
        f"{p}-artifacts",
        bucket=bucket.id,
        versioning_configuration={"status": "Enabled"},
        opts=ctx.opts,
    )
    default: dict[str, Any] = {"sse_algorithm": "AES256"}
    if ctx.kms_key is not None:
        default = {"sse_algorithm": "aws:kms", "kms_master_key_id": ctx.kms_key}
    aws.s3.BucketServerSideEncryptionConfiguration(
        f"{p}-artifacts",
        bucket=bucket.id,
        rules=[
            cast(
                Any,
                {
                    "apply_server_side_encryption_by_default": default,
                    "bucket_key_enabled": ctx.kms_key is not None,
                },
            )
        ],
        opts=ctx.opts,
    )
    block = aws.s3.BucketPublicAccessBlock(
        f"{p}-artifacts",
        bucket=bucket.id,
        block_public_acls=True,
        block_public_policy=True,
        ignore_public_acls=True,
        restrict_public_buckets=True,
        opts=ctx.opts,
    )
    aws.s3.BucketOwnershipControls(
        f"{p}-artifacts",
        bucket=bucket.id,
        rule={"object_ownership": "BucketOwnerEnforced"},
        opts=ctx.opts,
    )
    deny_plain_http = pulumi.Output.json_dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "DenyInsecureTransport",
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": "s3:*",
                    "Resource": [bucket.arn, pulumi.Output.concat(bucket.arn, "/*")],
                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                }
            ],
        }
    )
    aws.s3.BucketPolicy(
        f"{p}-artifacts",
        bucket=bucket.id,
        policy=deny_plain_http,
        opts=ctx.child(depends_on=[block]),
    )
    return bucket


def _role_arn(ctx: Context, bucket: aws.s3.Bucket, image: pulumi.Output[str]) -> pulumi.Output[str]:
    s = ctx.settings
    if s.role_arn:
        return pulumi.Output.from_input(s.role_arn)
    if s.role_from_stack:
        ref = pulumi.StackReference(s.role_from_stack)
        key = ctx.config.get(CONFIG_ROLE_OUTPUT) or DEFAULT_ROLE_OUTPUT
        return ref.require_output(key)
    p = ctx.names.prefix
    role = aws.iam.Role(
        f"{p}-sagemaker-exec",
        assume_role_policy=json.dumps(iam.ASSUME_ROLE_POLICY),
        description=f"SageMaker execution role for {ctx.plan.system.name} (specml)",
        tags=ctx.tags,
        opts=ctx.opts,
    )
    kms = ctx.kms_key if ctx.kms_key is not None else pulumi.Output.from_input("")
    policy = pulumi.Output.all(ctx.partition, ctx.account, bucket.arn, role.arn, kms, image).apply(
        lambda a: json.dumps(
            iam.execution_policy(
                iam.PolicyScope(
                    partition=a[0],
                    region=s.region,
                    account=a[1],
                    bucket_arn=a[2],
                    role_arn=a[3],
                    system=ctx.plan.system.name,
                    kms_key_arn=a[4] or None,
                    ecr_repository_arn=iam.ecr_repository_arn(a[5], a[0]),
                ),
                ctx.names,
            ),
            sort_keys=True,
        )
    )
    aws.iam.RolePolicy(f"{p}-sagemaker-exec", role=role.id, policy=policy, opts=ctx.opts)
    return role.arn


def _feature_groups(ctx: Context, bucket: aws.s3.Bucket, role_arn: pulumi.Output[str]) -> list[Any]:
    groups = []
    offline_uri = pulumi.Output.concat("s3://", bucket.bucket, "/feature-store")
    for spec in feature_group_specs(ctx.plan, ctx.names):
        online: dict[str, Any] = {"enable_online_store": spec.online}
        if spec.online:
            online["ttl_duration"] = {"unit": spec.ttl_unit, "value": spec.ttl_value}
        offline: dict[str, Any] = {"s3_storage_config": {"s3_uri": offline_uri}}
        if ctx.kms_key is not None:
            offline["s3_storage_config"]["kms_key_id"] = ctx.kms_key
            if spec.online:
                online["security_config"] = {"kms_key_id": ctx.kms_key}
        groups.append(
            aws.sagemaker.FeatureGroup(
                spec.name,
                feature_group_name=spec.name,
                description=spec.description or None,
                record_identifier_feature_name=spec.record_identifier,
                event_time_feature_name=spec.event_time_feature,
                feature_definitions=[
                    cast(Any, {"feature_name": n, "feature_type": t}) for n, t in spec.features
                ],
                online_store_config=cast(Any, online),
                offline_store_config=cast(Any, offline),
                role_arn=role_arn,
                tags=tags(ctx.plan, **{"specml:feature-view": spec.view_id}),
                opts=ctx.opts,
            )
        )
    return groups


def _pipeline(
    ctx: Context, bucket: aws.s3.Bucket, role_arn: pulumi.Output[str], image: pulumi.Output[str]
) -> aws.sagemaker.Pipeline:
    kms = ctx.kms_key if ctx.kms_key is not None else pulumi.Output.from_input("")
    definition = pulumi.Output.all(bucket.bucket, role_arn, image, kms).apply(
        lambda a: definition_json(
            build_definition(
                ctx.plan,
                DeployRefs(bucket=a[0], role_arn=a[1], image_uri=a[2], kms_key_id=a[3] or None),
            )
        )
    )
    return aws.sagemaker.Pipeline(
        ctx.names.pipeline,
        pipeline_name=ctx.names.pipeline,
        pipeline_display_name=ctx.names.pipeline,
        pipeline_description=f"specml training pipeline for {ctx.plan.system.name}",
        pipeline_definition=definition,
        role_arn=role_arn,
        tags=ctx.tags,
        opts=ctx.opts,
    )


def build(plan_json: str) -> dict[str, pulumi.Output[Any]]:
    """Create every resource for the Plan; export and return the stack outputs."""
    plan = Plan.from_json(plan_json)
    settings = settings_of(plan)
    names = Names.for_plan(plan)
    config = pulumi.Config()
    provider = aws.Provider(f"{names.prefix}-aws", region=settings.region)
    invoke = pulumi.InvokeOutputOptions(provider=provider)
    ctx = Context(
        plan=plan,
        settings=settings,
        names=names,
        config=config,
        opts=pulumi.ResourceOptions(provider=provider),
        account=aws.get_caller_identity_output(opts=invoke).account_id,
        partition=aws.get_partition_output(opts=invoke).partition,
        kms_key=config.require_secret(CONFIG_KMS_KEY) if settings.kms_key else None,
    )
    image = pulumi.Output.from_input(settings.image or config.require(CONFIG_IMAGE))
    bucket = _bucket(ctx)
    aws.s3.BucketObjectv2(
        f"{names.prefix}-plan",
        bucket=bucket.id,
        key=PLAN_KEY,
        content=plan_json,
        content_type="application/json",
        tags=ctx.tags,
        opts=ctx.opts,
    )
    role_arn = _role_arn(ctx, bucket, image)
    groups = _feature_groups(ctx, bucket, role_arn)
    aws.sagemaker.ModelPackageGroup(
        names.model_package_group,
        model_package_group_name=names.model_package_group,
        model_package_group_description=f"{plan.system.name} models registered by the pipeline",
        tags=ctx.tags,
        opts=ctx.opts,
    )
    pipeline = _pipeline(ctx, bucket, role_arn, image)
    endpoint, alarms = build_serving(ctx, bucket, role_arn, image)
    build_loop(ctx, bucket, role_arn, image, pipeline, champion_model_url(ctx, bucket))
    outputs: dict[str, pulumi.Output[Any]] = {
        "endpointName": endpoint.name,
        "bucketName": bucket.bucket,
        "pipelineArn": pipeline.arn,
        "executionRoleArn": role_arn,
        "featureGroupNames": pulumi.Output.all(*[g.feature_group_name for g in groups]),
        "alarmNames": pulumi.Output.all(*[a.name for a in alarms]),
    }
    for key, value in outputs.items():
        pulumi.export(key, value)
    return outputs
