"""Shared helpers for the Kubernetes manifests this target writes: stable YAML, names, durations."""

from __future__ import annotations

import math
from typing import Any

import yaml
from specml.compiler.ir import Plan

MANAGED_BY = "specml"


class _ManifestDumper(yaml.SafeDumper):
    """Block style, no aliases: manifests humans read and diff."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_ManifestDumper.add_representer(str, _str_representer)


def dump_manifest(doc: dict[str, Any], header: str = "") -> str:
    """One manifest as YAML text: keys in the order built (stable), block style, trailing newline."""
    body = yaml.dump(
        doc,
        Dumper=_ManifestDumper,
        sort_keys=False,
        default_flow_style=False,
        width=10_000,
        allow_unicode=True,
    )
    comment = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    return comment + body


def common_labels(plan: Plan) -> dict[str, str]:
    """Labels every manifest carries, the system's own labels first (sorted)."""
    labels = {f"specml.io/{k}": v for k, v in sorted(plan.system.labels.items())}
    labels.update(
        {
            "app.kubernetes.io/name": plan.system.name,
            "app.kubernetes.io/managed-by": MANAGED_BY,
            "specml.io/owner": plan.system.owner,
        }
    )
    return labels


def common_annotations(plan: Plan) -> dict[str, str]:
    """Annotations every manifest carries. Not the spec hash: a manifest changes only when its
    own content does (`compile --check` after a one-field edit flags only the files it touches);
    lineage lives in the Plan the controller's ConfigMap and the pipeline carry."""
    return {"specml.io/ir-version": plan.ir_version}


def object_meta(plan: Plan, name: str, component: str) -> dict[str, Any]:
    """metadata of one of the system's objects: name, namespace, the common labels plus
    `app.kubernetes.io/component`, the common annotations."""
    return {
        "name": name,
        "namespace": namespace(plan),
        "labels": {**common_labels(plan), "app.kubernetes.io/component": component},
        "annotations": common_annotations(plan),
    }


def short_hash(plan: Plan) -> str:
    """The spec hash's first 12 hex digits, for headers."""
    return plan.spec_hash.rsplit(":", 1)[-1][:12]


def namespace(plan: Plan) -> str:
    """The Kubernetes namespace from targets.kubeflow."""
    assert plan.targets.kubeflow is not None
    return plan.targets.kubeflow.namespace


def prom_duration(seconds: float) -> str:
    """Seconds as a Prometheus duration (`90s`, `5m`, `1h30m`, `7d`); 0 is `0s`."""
    total = int(math.ceil(seconds))
    if total <= 0:
        return "0s"
    out = ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, total = divmod(total, size)
        if count:
            out += f"{count}{unit}"
    return out


def human_duration(seconds: int) -> str:
    """Seconds for people (README): `30m`, `1h`, `none`."""
    return prom_duration(seconds) if seconds > 0 else "none"
