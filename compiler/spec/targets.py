"""Spec models for per-target settings."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Discriminator, Field, Tag
from specml.compiler.spec.types import SecretReference, SpecModel

AWS_REGION_RE = r"^[a-z]{2}(-gov)?-[a-z]+-\d$"
SAGEMAKER_INSTANCE_RE = r"^ml\.[a-z0-9]+\.[a-z0-9]+$"


class LocalTargetModel(SpecModel):
    """Settings for running the system on this machine."""

    workdir: str = Field(
        default=".specml",
        description="Folder (relative to the spec) for state, the feature repo, MLflow and models.",
        examples=[".specml"],
    )
    host: str = Field(
        default="127.0.0.1", description="Address the server binds.", examples=["127.0.0.1"]
    )
    port: int = Field(default=8080, ge=1, le=65535, description="Server port.", examples=[8080])
    keep_online_stores: int = Field(
        default=1,
        ge=0,
        le=1000,
        description="Online stores of older applies kept besides the champion's and the "
        "challenger's (which are always kept: serving and rollback need them); older ones are "
        "removed after each apply.",
        examples=[1],
    )


class KubeflowTargetModel(SpecModel):
    """Settings for Kubeflow Pipelines + KServe."""

    image: str = Field(
        min_length=1,
        description="Container image with specml installed; every pipeline step runs in it.",
        examples=["ghcr.io/acme/specml-runtime:1.0"],
    )
    namespace: str = Field(
        default="default",
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="Kubernetes namespace for the InferenceService and rules.",
        examples=["ml"],
    )
    pipeline_root: str | None = Field(
        default=None,
        description="Artifact root for pipeline runs.",
        examples=["gs://acme-ml/pipelines"],
    )
    service_account: str | None = Field(
        default=None, description="Service account for predictors.", examples=["ml-serving"]
    )
    storage_uri: str | None = Field(
        default=None,
        description="Where the registered ONNX model is published for KServe.",
        examples=["s3://acme-ml/models/churn"],
    )
    retries: int = Field(
        default=1, ge=0, le=10, description="Retries per pipeline step.", examples=[2]
    )
    image_pull_secret: SecretReference | None = Field(
        default=None,
        description="Registry credentials, as a reference to a Kubernetes secret.",
        examples=[{"secret": "ghcr-pull"}],
    )
    istio: bool = Field(
        default=False,
        description="Istio runs in the cluster: shadow steps become a VirtualService mirror.",
        examples=[True],
    )
    prometheus_url: str = Field(
        default="http://prometheus-operated.monitoring.svc:9090",
        description="Prometheus HTTP API the rollout controller queries (the one evaluating the "
        "PrometheusRule).",
        examples=["http://prometheus-operated.monitoring.svc:9090"],
    )
    pipelines_host: str | None = Field(
        default=None,
        description="KFP API endpoint `specml apply` and the retraining webhook use "
        "(else $KF_PIPELINES_ENDPOINT or --kfp-host).",
        examples=["https://kubeflow.acme.dev/pipeline"],
    )
    pipelines_token: SecretReference | None = Field(
        default=None,
        description="Bearer token for the KFP API, as a reference (an env var or a secret).",
        examples=[{"env": "KFP_TOKEN"}],
    )


class RoleFromStack(SpecModel):
    """Take the execution role ARN from another Pulumi stack's output."""

    from_stack: str = Field(
        min_length=1,
        description="Pulumi stack reference (org/project/stack).",
        examples=["acme/ml-base/prod"],
    )


class RoleArn(SpecModel):
    """Use an existing IAM role."""

    arn: str = Field(
        pattern=r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$",
        description="IAM role ARN.",
        examples=["arn:aws:iam::123456789012:role/sagemaker-exec"],
    )


def _role_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        return "arn" if "arn" in value else "stack"
    return "arn" if isinstance(value, RoleArn) else "stack"


RoleChoice = Annotated[
    Annotated[RoleFromStack, Tag("stack")] | Annotated[RoleArn, Tag("arn")],
    Discriminator(_role_kind),
]


class SagemakerTargetModel(SpecModel):
    """Settings for AWS SageMaker via Pulumi."""

    region: str = Field(pattern=AWS_REGION_RE, description="AWS region.", examples=["eu-west-1"])
    instance_type: str = Field(
        default="ml.m5.large",
        pattern=SAGEMAKER_INSTANCE_RE,
        description="Endpoint instance type.",
        examples=["ml.c6i.xlarge"],
    )
    training_instance_type: str = Field(
        default="ml.m5.xlarge",
        pattern=SAGEMAKER_INSTANCE_RE,
        description="Training job instance type (a GPU family when training asks for a GPU).",
        examples=["ml.g5.xlarge"],
    )
    image: str | None = Field(
        default=None,
        description="ECR image with specml installed for pipeline steps and serving.",
        examples=["123456789012.dkr.ecr.eu-west-1.amazonaws.com/specml-runtime:1.0"],
    )
    role: RoleChoice | None = Field(
        default=None,
        description="Execution role: `{arn: ...}` or `{from_stack: ...}`; created if omitted.",
        examples=[{"from_stack": "acme/ml-base/prod"}],
    )
    kms_key: SecretReference | None = Field(
        default=None,
        description="KMS key for the artifact bucket, as a secret reference.",
        examples=[{"secret": "ml/kms-key-arn"}],
    )


class TargetsSection(SpecModel):
    """Per-target settings; a target without settings uses its defaults (kubeflow needs an image)."""

    local: LocalTargetModel = Field(
        default_factory=LocalTargetModel,
        description="Local target.",
        examples=[{"workdir": ".specml"}],
    )
    kubeflow: KubeflowTargetModel | None = Field(
        default=None,
        description="Kubeflow target.",
        examples=[{"image": "ghcr.io/acme/specml-runtime:1.0", "namespace": "ml"}],
    )
    sagemaker: SagemakerTargetModel | None = Field(
        default=None,
        description="SageMaker target.",
        examples=[{"region": "eu-west-1", "instance_type": "ml.c6i.xlarge"}],
    )
