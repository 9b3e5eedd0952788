"""`specml rollout status --target kubeflow`: the in-cluster controller's state, read back.

The controller keeps its whole state in the InferenceService's `specml.io/rollout-state`
annotation (runtime/rollout/kubernetes.py); this reads the object through the official
`kubernetes` client (an explicit API server, else the kubeconfig) and shows that state as the
local target's status document, plus the object's revisions and current traffic split.
"""

from __future__ import annotations

from typing import Any

from specml.compiler.errors import Diagnostic, TargetError
from specml.compiler.ir import Plan
from specml.targets.kubeflow.manifests import namespace


def rollout_status(plan: Plan, kube_api: str | None) -> dict[str, Any] | None:
    """The rollout's status document, or None when the InferenceService carries no rollout."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config import ConfigException
    from specml.runtime.rollout.kubernetes import (
        InferenceServiceStore,
        NotOwnedError,
        api_client,
        status_of,
    )
    from urllib3.exceptions import HTTPError

    ns, name = namespace(plan), plan.endpoint.name
    try:
        api = client.CustomObjectsApi(api_client(kube_api))
        return status_of(InferenceServiceStore(api, ns, name, plan.system.name))
    except NotOwnedError as exc:
        raise _error(str(exc), "not_owned", "is this the spec that applied it?") from None
    except ApiException as exc:
        if exc.status == 404:
            raise _error(
                f"no InferenceService {ns}/{name} in the cluster",
                "not_applied",
                "apply the spec first: `specml apply SPEC --target kubeflow`",
            ) from None
        raise _error(
            f"reading InferenceService {ns}/{name} failed: HTTP {exc.status} {exc.reason}",
            "kube_api",
            "check the kubeconfig context or --endpoint kubernetes=URL",
        ) from None
    except (ConfigException, HTTPError, OSError) as exc:  # no kubeconfig, no connection
        raise _error(
            f"cannot reach the Kubernetes API: {exc}",
            "kube_api",
            "check the kubeconfig context or --endpoint kubernetes=URL",
        ) from None


def _error(message: str, code: str, hint: str) -> TargetError:
    return TargetError([Diagnostic(message, hint=hint, stage="target", code=code)])
