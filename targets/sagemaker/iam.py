"""The execution role's least-privilege policy: this system's bucket, jobs, feature groups, logs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from specml.targets.sagemaker.naming import SYSTEM_TAG, Names

ASSUME_ROLE_POLICY: dict[str, Any] = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "sagemaker.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}

# Actions without resource-level permissions: AWS requires Resource "*" for them. PutMetricData
# is narrowed by a namespace condition; GetAuthorizationToken only issues a registry token, the
# image pull itself is limited to one repository (PullImage).
UNSCOPABLE_ACTIONS = frozenset({"cloudwatch:PutMetricData", "ecr:GetAuthorizationToken"})


@dataclass(frozen=True)
class PolicyScope:
    """The concrete identifiers the policy names (resolved Pulumi outputs)."""

    partition: str
    region: str
    account: str
    bucket_arn: str
    role_arn: str
    system: str
    kms_key_arn: str | None = None
    ecr_repository_arn: str | None = None


def ecr_repository_arn(image: str, partition: str) -> str | None:
    """`ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPO[:TAG|@DIGEST]` -> the repository ARN."""
    host, _, path = image.partition("/")
    bits = host.split(".")
    if len(bits) < 6 or bits[1:3] != ["dkr", "ecr"] or not path:
        return None
    repo = path.split("@", 1)[0].rsplit(":", 1)[0]
    return f"arn:{partition}:ecr:{bits[3]}:{bits[0]}:repository/{repo}"


def execution_policy(scope: PolicyScope, names: Names) -> dict[str, Any]:
    """The inline policy document for the SageMaker execution role."""
    sm = f"arn:{scope.partition}:sagemaker:{scope.region}:{scope.account}"
    glue = f"arn:{scope.partition}:glue:{scope.region}:{scope.account}"
    logs = f"arn:{scope.partition}:logs:{scope.region}:{scope.account}"
    p = names.prefix
    tagged = {"StringEquals": {f"aws:ResourceTag/{SYSTEM_TAG}": scope.system}}
    statements: list[dict[str, Any]] = [
        {
            "Sid": "ArtifactBucketList",
            "Effect": "Allow",
            "Action": ["s3:GetBucketLocation", "s3:ListBucket"],
            "Resource": [scope.bucket_arn],
        },
        {
            "Sid": "ArtifactBucketObjects",
            "Effect": "Allow",
            "Action": [
                "s3:AbortMultipartUpload",
                "s3:DeleteObject",
                "s3:GetObject",
                "s3:PutObject",
            ],
            "Resource": [f"{scope.bucket_arn}/*"],
        },
        # Pipeline-created jobs get generated names, so they are scoped by the system tag the
        # pipeline definition puts on every job (attribute-based access control).
        {
            "Sid": "PipelineJobsCreate",
            "Effect": "Allow",
            "Action": [
                "sagemaker:AddTags",
                "sagemaker:CreateProcessingJob",
                "sagemaker:CreateTrainingJob",
            ],
            "Resource": [f"{sm}:processing-job/*", f"{sm}:training-job/*"],
            "Condition": {"StringEquals": {f"aws:RequestTag/{SYSTEM_TAG}": scope.system}},
        },
        {
            "Sid": "PipelineJobsManage",
            "Effect": "Allow",
            "Action": [
                "sagemaker:DescribeProcessingJob",
                "sagemaker:DescribeTrainingJob",
                "sagemaker:StopProcessingJob",
                "sagemaker:StopTrainingJob",
            ],
            "Resource": [f"{sm}:processing-job/*", f"{sm}:training-job/*"],
            "Condition": tagged,
        },
        {
            "Sid": "SystemResources",
            "Effect": "Allow",
            "Action": [
                "sagemaker:BatchGetRecord",
                "sagemaker:CreateModelPackage",
                "sagemaker:CreateModelPackageGroup",
                "sagemaker:DescribeFeatureGroup",
                "sagemaker:DescribeModelPackage",
                "sagemaker:DescribeModelPackageGroup",
                "sagemaker:DescribePipeline",
                "sagemaker:DescribePipelineExecution",
                "sagemaker:GetRecord",
                "sagemaker:ListModelPackages",
                "sagemaker:ListPipelineExecutionSteps",
                "sagemaker:PutRecord",
                "sagemaker:UpdateModelPackage",
            ],
            "Resource": [
                f"{sm}:feature-group/{p}-*",
                f"{sm}:model-package-group/{p}*",
                f"{sm}:model-package/{p}*",
                f"{sm}:pipeline/{p}-*",
                f"{sm}:pipeline/{p}-*/execution/*",
            ],
        },
        {
            "Sid": "PassOwnRoleToJobs",
            "Effect": "Allow",
            "Action": ["iam:PassRole"],
            "Resource": [scope.role_arn],
            "Condition": {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
        },
        {
            "Sid": "OfflineStoreCatalog",
            "Effect": "Allow",
            "Action": ["glue:CreateTable", "glue:GetDatabase", "glue:GetTable", "glue:UpdateTable"],
            "Resource": [
                f"{glue}:catalog",
                f"{glue}:database/sagemaker_featurestore",
                f"{glue}:table/sagemaker_featurestore/{names.glue_table_prefix}*",
            ],
        },
        {
            "Sid": "Logs",
            "Effect": "Allow",
            "Action": [
                "logs:CreateLogGroup",
                "logs:CreateLogStream",
                "logs:DescribeLogStreams",
                "logs:PutLogEvents",
            ],
            "Resource": [f"{logs}:log-group:/aws/sagemaker/*"],
        },
        {
            "Sid": "Metrics",
            "Effect": "Allow",
            "Action": ["cloudwatch:PutMetricData"],
            "Resource": ["*"],
            "Condition": {"StringLike": {"cloudwatch:namespace": ["/aws/sagemaker/*", "specml/*"]}},
        },
        {
            "Sid": "PullImageToken",
            "Effect": "Allow",
            "Action": ["ecr:GetAuthorizationToken"],
            "Resource": ["*"],
        },
    ]
    if scope.ecr_repository_arn:
        statements.append(
            {
                "Sid": "PullImage",
                "Effect": "Allow",
                "Action": [
                    "ecr:BatchCheckLayerAvailability",
                    "ecr:BatchGetImage",
                    "ecr:GetDownloadUrlForLayer",
                ],
                "Resource": [scope.ecr_repository_arn],
            }
        )
    if scope.kms_key_arn:
        statements.append(
            {
                "Sid": "ArtifactKey",
                "Effect": "Allow",
                "Action": [
                    "kms:CreateGrant",
                    "kms:Decrypt",
                    "kms:DescribeKey",
                    "kms:Encrypt",
                    "kms:GenerateDataKey",
                ],
                "Resource": [scope.kms_key_arn],
            }
        )
    return {"Version": "2012-10-17", "Statement": statements}
