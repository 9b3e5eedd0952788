"""Physical names and tags for one system's AWS resources, derived from the Plan alone."""

from __future__ import annotations

import re
from dataclasses import dataclass

from specml.compiler.ir import Plan

# SageMaker endpoint/model/pipeline names allow [a-zA-Z0-9-] only; feature groups also '_'.
_UNSAFE = re.compile(r"[^a-zA-Z0-9-]+")

PRODUCTION_VARIANT = "primary"  # blue/green needs the same variant name in every endpoint config
SHADOW_VARIANT = "shadow"
SYSTEM_TAG = "specml:system"


def sm_name(*parts: str, limit: int = 63) -> str:
    """A SageMaker-safe name: parts joined by '-', unsafe characters folded to '-'."""
    name = _UNSAFE.sub("-", "-".join(p for p in parts if p)).strip("-")
    return re.sub("-{2,}", "-", name)[:limit].rstrip("-")


@dataclass(frozen=True)
class Names:
    """Every name the program gives a resource; IAM ARNs are built from `prefix`."""

    prefix: str
    project: str  # the Pulumi project name; config keys are `<project>:<key>`
    endpoint: str
    pipeline: str
    model_package_group: str

    @classmethod
    def for_plan(cls, plan: Plan) -> Names:
        prefix = sm_name(plan.system.name, limit=40).lower()
        return cls(
            prefix=prefix,
            project=f"specml-{prefix}",
            endpoint=sm_name(plan.endpoint.name),
            pipeline=sm_name(prefix, "training"),
            model_package_group=sm_name(prefix, plan.registry.name)
            if plan.registry.name != prefix
            else prefix,
        )

    def feature_group(self, view_id: str) -> str:
        return sm_name(self.prefix, view_id)

    def alarm(self, *parts: str) -> str:
        return sm_name(self.prefix, *parts, limit=255)

    @property
    def glue_table_prefix(self) -> str:
        """Feature Store names its Glue tables after the group, lower case, '-' as '_'."""
        return self.prefix.replace("-", "_")


def tags(plan: Plan, **extra: str) -> dict[str, str]:
    """Tags for every taggable resource: the system's labels, its owner, and what made it."""
    out = dict(sorted(plan.system.labels.items()))
    out.update({"owner": plan.system.owner, SYSTEM_TAG: plan.system.name, "managed-by": "specml"})
    out.update(extra)
    return dict(sorted(out.items()))


def container_environment(plan: Plan) -> dict[str, str]:
    """The serving container's environment (the endpoint's Model and the registered package)."""
    ep = plan.endpoint
    return {
        "SPECML_SYSTEM": plan.system.name,
        "SPECML_MODEL_FORMAT": ep.format,
        "SPECML_MAX_BATCH_SIZE": str(ep.batching.max_batch_size if ep.batching.enabled else 1),
        "SPECML_MAX_DELAY_MS": f"{ep.batching.max_delay_ms:g}",
    }
