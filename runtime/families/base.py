"""The contract every model family implements.

Raw columns: a mapping from each model input name (`FeatureRef.input_name`, in the Plan's order)
to a 1-D numpy array of N raw values: float32 with NaN for numeric inputs, object arrays of `str`
(None or "" = missing) for string categoricals, int64 for integer categoricals. Labels are class
indices (int64, per the model's `classes`) or float32 values (regression).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from specml.compiler.ir import Plan
from specml.runtime.encoding import Vocabulary

Columns = Mapping[str, np.ndarray]


class TrainedModel(Protocol):
    """A fitted model with its preprocessing (vocabularies, imputation, scaling) inside."""

    classes: tuple[str | int, ...] | None  # class names in output order; None for regression
    vocabularies: Mapping[str, Vocabulary]  # per categorical input name (runtime/encoding.py)

    def predict(self, columns: Columns) -> np.ndarray:
        """The serving output `output`: P(positive) [N,1], class probabilities [N,K], or [N,1]."""
        ...

    def save(self, folder: Path, metadata: dict[str, Any]) -> None:
        """Write the model (and metadata JSON) so `Family.load` restores it exactly."""
        ...

    def export_onnx(self, path: Path) -> None:
        """Write one ONNX graph: one `[-1, 1]` input per feature, named and typed as in the Plan,
        outputs `output` (as `predict`) and, for classification, `label` (class names [N,1])."""
        ...


class Family(Protocol):
    """A module implementing one or more `training.model.type`s."""

    def fit(
        self,
        plan: Plan,
        train: tuple[Columns, np.ndarray],
        validation: tuple[Columns, np.ndarray],
        classes: tuple[str | int, ...] | None,
        device: str,
        on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    ) -> tuple[TrainedModel, list[dict[str, float]], int]:
        """Fit on the training split (early stopping on validation): model, history, best round."""
        ...

    def load(self, plan: Plan, folder: Path) -> TrainedModel:
        """Load a model saved by `TrainedModel.save`."""
        ...
