"""The training-time drift reference: files written at export, loaded and found by the monitor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from specml.compiler.api import plan_file
from specml.runtime.monitor.drift import build_reference, check_drift
from specml.runtime.monitor.reference import (
    FEATURE_REFERENCE,
    SAMPLE_ROWS,
    ReferenceSet,
    find_reference,
    write_reference,
    write_training_reference,
)
from specml.runtime.steps.common import TIMESTAMP, split_indices

SPEC = Path(__file__).resolve().parents[2] / "specs" / "churn.yaml"


@pytest.fixture(scope="module")
def plan():  # noqa: ANN201
    return plan_file(SPEC)


def _training_set(plan, n: int, rng: np.random.Generator) -> pd.DataFrame:  # noqa: ANN001
    frame = pd.DataFrame(
        {
            f.ref: rng.choice(np.array(["basic", "premium"], dtype=object), n)
            if f.categorical is not None
            else rng.normal(size=n)
            for f in plan.training.features
        }
    )
    frame[TIMESTAMP] = pd.date_range("2026-01-01", periods=n, freq="h", tz="UTC")
    frame[plan.features.label.field] = rng.integers(0, 2, n)
    return frame


def test_write_load_and_check_equal_a_direct_reference(plan, tmp_path: Path) -> None:  # noqa: ANN001
    rng = np.random.default_rng(0)
    names = [f.ref for f in plan.training.features]
    train = _training_set(plan, 8000, rng)
    preds = rng.random((8000, 1))
    paths = write_reference(plan, train, preds, tmp_path / "model")
    assert sorted(p.name for p in paths.values()) == [
        "drift_reference.npz",
        "drift_sample.parquet",
        "prediction_reference.npz",
    ]
    refs = ReferenceSet.load(tmp_path / "model")
    assert refs.features.feature_names == tuple(names) and refs.features.n_rows == 8000
    assert refs.predictions is not None and refs.predictions.feature_names == ("prediction",)
    assert refs.sample is not None and len(refs.sample) == SAMPLE_ROWS
    assert list(refs.sample.columns) == [*names, "prediction"]
    current = pd.DataFrame(rng.normal(0.3, 1.0, (500, len(names))), columns=names)
    current["customer_stats:plan_type"] = rng.choice(np.array(["basic", "family"], object), 500)
    assert (
        check_drift(refs.features, current).to_json()
        == check_drift(build_reference(train[names], names), current).to_json()
    )


def test_training_reference_uses_the_train_split_and_never_fails(plan, tmp_path: Path) -> None:  # noqa: ANN001
    rng = np.random.default_rng(1)
    train = _training_set(plan, 1000, rng)
    train.to_parquet(tmp_path / "ts.parquet")
    write_training_reference(plan, tmp_path / "ts.parquet", rng.random(200), tmp_path / "a")
    n_train = len(split_indices(plan, train)["train"])
    assert n_train < 1000 and ReferenceSet.load(tmp_path / "a").features.n_rows == n_train
    broken = train.copy()
    broken[plan.training.features[0].ref] = np.nan  # nothing to build a histogram from
    broken.to_parquet(tmp_path / "broken.parquet")
    assert (
        write_training_reference(plan, tmp_path / "broken.parquet", rng.random(200), tmp_path / "b")
        == {}
    )
    assert not (tmp_path / "b" / FEATURE_REFERENCE).exists()


def test_find_reference_prefers_the_champion(plan, tmp_path: Path) -> None:  # noqa: ANN001
    rng = np.random.default_rng(2)
    train = _training_set(plan, 300, rng)
    assert find_reference(tmp_path) is None
    run = tmp_path / "runs" / "20260101T000000Z-abc" / "export_onnx" / "onnx_model"
    write_reference(plan, train, rng.random(300), run)
    assert find_reference(tmp_path) == run
    write_reference(plan, train, rng.random(300), tmp_path / "serving" / "current")
    assert find_reference(tmp_path) == tmp_path / "serving" / "current"


def test_reference_keeps_string_features_as_categories(plan, tmp_path: Path) -> None:  # noqa: ANN001
    rng = np.random.default_rng(3)
    train = _training_set(plan, 2000, rng)
    train["customer_stats:plan_type"] = rng.choice(
        np.array(["basic", "premium", None], dtype=object), 2000, p=[0.6, 0.35, 0.05]
    )  # missing values are left out of the shares
    write_reference(plan, train, rng.random(2000), tmp_path / "m")
    refs = ReferenceSet.load(tmp_path / "m")
    values, shares = refs.features.categories["customer_stats:plan_type"]
    assert values == ("basic", "premium") and shares[-1] == 0.0  # nothing unknown in training
    assert shares[0] == pytest.approx(0.6 / 0.95, abs=0.03)
    assert refs.sample is not None and refs.sample["customer_stats:plan_type"].dtype == object
    assert "customer_stats:plan_type" not in refs.features.numeric_names
