"""Target registry: the one place targets are named; each is imported only when chosen."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from specml.compiler.errors import Diagnostic, TargetError, did_you_mean

if TYPE_CHECKING:
    from specml.targets.base import Target

# name -> (module, class, pip extra). Adding a target is one line here and one folder.
REGISTRY: dict[str, tuple[str, str, str]] = {
    "local": ("specml.targets.local.target", "LocalTarget", "local"),
    "kubeflow": ("specml.targets.kubeflow.target", "KubeflowTarget", "kubeflow"),
    "sagemaker": ("specml.targets.sagemaker.target", "SagemakerTarget", "sagemaker"),
}


def target_names() -> list[str]:
    """All registered target names, sorted."""
    return sorted(REGISTRY)


def get_target(name: str) -> Target:
    """Instantiate a target by name; unknown names get a did-you-mean, missing extras a pip hint."""
    if name not in REGISTRY:
        guess = did_you_mean(name, REGISTRY)
        hint = (
            f"did you mean '{guess}'?" if guess else f"known targets: {', '.join(target_names())}"
        )
        raise TargetError(
            [
                Diagnostic(
                    f"unknown target '{name}'", hint=hint, stage="usage", code="unknown_target"
                )
            ]
        )
    module_name, class_name, extra = REGISTRY[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("specml"):
            raise
        raise TargetError(
            [
                Diagnostic(
                    f"the {name} target needs the '{exc.name}' package, which is not installed",
                    hint=f"pip install 'specml[{extra}]'",
                    stage="target",
                    code="missing_extra",
                )
            ]
        ) from None
    return getattr(module, class_name)()
