"""Model families: each fits on raw feature columns and exports one ONNX graph that takes them.

A family module (`torch_family` for mlp/linear, `trees` for lightgbm/xgboost) provides the
functions of `base.Family`; `family_for(plan)` picks one by `plan.training.model.type`.
"""

from __future__ import annotations

import importlib

from specml.compiler.ir import Plan
from specml.runtime.families.base import Family

FAMILY_MODULES: dict[str, str] = {
    "mlp": "specml.runtime.families.torch_family",
    "linear": "specml.runtime.families.torch_family",
    "lightgbm": "specml.runtime.families.trees",
    "xgboost": "specml.runtime.families.trees",
}


def family_for(plan: Plan) -> Family:
    """The family module that trains, loads and exports this Plan's model type."""
    module = importlib.import_module(FAMILY_MODULES[plan.training.model.type])
    return module  # type: ignore[return-value]


__all__ = ["FAMILY_MODULES", "Family", "family_for"]
