"""Make the helper modules importable under --import-mode=importlib: this folder's
(kubeflow_testlib) and tests/runtime's API stand-ins (kube_standins), shared with the runtime tests."""

from __future__ import annotations

import sys
from pathlib import Path

for _folder in (Path(__file__).parent, Path(__file__).resolve().parents[2] / "runtime"):
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))


def _kserve_models_only() -> None:
    """Import the kserve SDK's models without its package __init__: that __init__ loads the SDK's
    gRPC protos, whose `inference.*` messages tritonclient (our gRPC server and its tests) has
    already registered in protobuf's default pool, and a second registration fails. The manifest
    checks need only `kserve.models`, `kserve.constants` and the OpenAPI client."""
    import importlib
    import importlib.util
    import types

    if "kserve" in sys.modules:
        return
    spec = importlib.util.find_spec("kserve")
    if spec is None or not spec.submodule_search_locations:
        return
    package = types.ModuleType("kserve")
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__ = spec
    sys.modules["kserve"] = package
    # as the package __init__ does: `kserve.constants` names the constants module itself
    package.constants = importlib.import_module("kserve.constants.constants")  # type: ignore[attr-defined]


_kserve_models_only()
