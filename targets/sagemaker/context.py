"""What every Pulumi builder shares: the Plan, names, config keys, provider and account facts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
from specml.compiler.errors import Diagnostic, TargetError
from specml.compiler.ir import Plan, SagemakerSettings
from specml.targets.sagemaker.naming import Names, tags

# Pulumi config keys (README.md of the emitted project documents them).
CONFIG_IMAGE = "image"
CONFIG_KMS_KEY = "kmsKeyArn"
CONFIG_WEBHOOK = "alertWebhookUrl"
CONFIG_ROLE_OUTPUT = "roleOutputName"
CONFIG_MODEL_VERSION = "modelVersion"
CONFIG_SHADOW_VERSION = "shadowModelVersion"
CONFIG_INVOCATIONS_TARGET = "invocationsPerInstanceTarget"
DEFAULT_ROLE_OUTPUT = "executionRoleArn"
DEFAULT_INVOCATIONS_TARGET = 100.0


def settings_of(plan: Plan) -> SagemakerSettings:
    """The Plan's SageMaker settings, or a TargetError saying how to add them."""
    if plan.targets.sagemaker is None:
        raise TargetError(
            [
                Diagnostic(
                    "the spec has no targets.sagemaker settings",
                    path=("targets", "sagemaker"),
                    hint="add e.g. `targets: {sagemaker: {region: eu-west-1, instance_type: ml.m5.large}}`",
                    stage="target",
                    code="sagemaker_missing_settings",
                )
            ]
        )
    return plan.targets.sagemaker


@dataclass
class Context:
    """What every builder needs: the Plan, names, tags, config, provider and account facts."""

    plan: Plan
    settings: SagemakerSettings
    names: Names
    config: pulumi.Config
    opts: pulumi.ResourceOptions
    account: pulumi.Output[str]
    partition: pulumi.Output[str]
    kms_key: pulumi.Output[str] | None

    def child(self, **kw: Any) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions.merge(self.opts, pulumi.ResourceOptions(**kw))

    @property
    def tags(self) -> dict[str, str]:
        return tags(self.plan)
