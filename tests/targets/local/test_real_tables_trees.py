"""The real-table end-to-end check (test_real_tables.py) for the tree families: the spec a user
writes -> `specml apply` -> the real server -> raw strings by named input (unseen and missing
included) -> the offline model's predictions and class names."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_HARNESS = Path(__file__).with_name("test_real_tables.py")


def _real_tables():  # noqa: ANN202
    """The real-table harness module (tests are not a package: loaded by path)."""
    spec = importlib.util.spec_from_file_location("real_tables_harness", _HARNESS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "table", "training"),
    [
        (
            "penguins-lightgbm",
            "penguins",
            """  task: multiclass_classification
  num_classes: 3
  model: {type: lightgbm, min_child_samples: 5}
  gates: {min: {accuracy: 0.9}}""",
        ),
        (
            "default-xgboost",
            "default",
            """  task: binary_classification
  model: {type: xgboost, max_depth: 3}
  gates: {min: {roc_auc: 0.85}}""",
        ),
        (
            "diamonds-lightgbm",
            "diamonds",
            """  task: regression
  model: {type: lightgbm}
  gates: {min: {r2: 0.9}}""",
        ),
    ],
)
def test_tree_family_applies_and_serves_raw_strings_like_offline(
    name: str, table: str, training: str, tmp_path: Path
) -> None:
    harness = _real_tables()
    load, fields, label, _ = harness.CASES[table]
    harness.CASES[name] = (load, fields, label, training)
    harness.test_real_table_applies_serves_raw_strings_like_offline(name, tmp_path)
