"""Demo data: deterministic per seed, shaped by the Plan, and with a label that can be learnt."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from specml.compiler.api import plan_file
from specml.runtime.demo_data import asof_features, demo_tables, write_demo_data

SPECS = Path(__file__).resolve().parents[2] / "specs"


def _digest(paths: list[Path]) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


@pytest.mark.parametrize("name", ["churn", "fraud", "demand"])
def test_same_seed_same_bytes_other_seed_other_data(tmp_path: Path, name: str) -> None:
    plan = plan_file(SPECS / f"{name}.yaml")
    first = write_demo_data(plan, tmp_path / "a", rows=400, seed=5)
    second = write_demo_data(plan, tmp_path / "b", rows=400, seed=5)
    other = write_demo_data(plan, tmp_path / "c", rows=400, seed=6)
    assert _digest(first) == _digest(second)
    assert _digest(first) != _digest(other)
    for a, b in zip(first, second, strict=True):
        pd.testing.assert_frame_equal(pd.read_parquet(a), pd.read_parquet(b))


@pytest.mark.parametrize("name", ["churn", "fraud", "demand"])
def test_tables_follow_the_plan(tmp_path: Path, name: str) -> None:
    plan = plan_file(SPECS / f"{name}.yaml")
    paths = write_demo_data(plan, tmp_path, rows=300, seed=1)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in paths) == sorted(
        s.path for s in plan.features.sources
    )
    ents = {e.id: e for e in plan.features.entities}
    for source in plan.features.sources:
        df = pd.read_parquet(tmp_path / source.path)
        assert len(df) == 300
        ts = df[source.timestamp_field]
        assert str(ts.dt.tz) == "UTC"
        assert (ts.max() - ts.min()) > pd.Timedelta(days=60)  # spread over months
        for view in (v for v in plan.features.views if v.source_id == source.id):
            for key in ents[view.entity_id].join_keys:
                assert df[key].dtype == np.int64
            for fld in view.fields:
                want = "object" if fld.dtype == "string" else fld.dtype
                assert str(df[fld.name].dtype) == want
    label_src = next(s for s in plan.features.sources if s.id == plan.features.label.source_id)
    label = pd.read_parquet(tmp_path / label_src.path)[plan.features.label.field]
    assert label.notna().all()
    floats = [
        pd.read_parquet(tmp_path / s.path)[f.name]
        for v in plan.features.views
        for s in plan.features.sources
        if s.id == v.source_id
        for f in v.fields
        if f.dtype.startswith("float")
    ]
    assert any(col.isna().any() for col in floats)  # some missing values


def _holdout_score(plan, tables) -> float:  # noqa: ANN001
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.metrics import r2_score, roc_auc_score

    x = asof_features(plan, tables, plan.features.label.source_id)
    x = np.nan_to_num((x - np.nanmean(x, 0)) / np.nanstd(x, 0))
    y = tables[plan.features.label.source_id][plan.features.label.field].to_numpy()
    cut = int(len(y) * 0.75)
    if plan.training.task == "regression":
        model = LinearRegression().fit(x[:cut], y[:cut])
        return r2_score(y[cut:], model.predict(x[cut:]))
    model = LogisticRegression(max_iter=500).fit(x[:cut], y[:cut])
    if plan.training.task == "binary_classification":
        return roc_auc_score(y[cut:], model.predict_proba(x[cut:])[:, 1])
    return float((model.predict(x[cut:]) == y[cut:]).mean())


@pytest.mark.parametrize("name", ["churn", "fraud", "demand"])
def test_label_has_learnable_signal(name: str) -> None:
    plan = plan_file(SPECS / f"{name}.yaml")
    tables = demo_tables(plan, rows=1500, seed=2)
    score = _holdout_score(plan, tables)
    if plan.training.task == "regression":
        assert score > 0.3  # r2 of a plain linear fit, chance is <= 0
    else:
        assert score > 0.7  # ROC AUC of a plain logistic fit, chance is 0.5
        y = tables[plan.features.label.source_id][plan.features.label.field]
        assert 0.03 < y.mean() < 0.6  # both classes present in realistic proportions


@pytest.mark.parametrize("name", ["churn", "demand"])
def test_other_seed_is_new_data_from_the_same_process(name: str) -> None:
    """<1 s: a model fitted on seed 0 scores as well on seed 1 (same field distributions and
    label function; the seed only draws the samples), so retraining on new data is meaningful."""
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.metrics import r2_score, roc_auc_score

    plan = plan_file(SPECS / f"{name}.yaml")
    label = plan.features.label

    def xy(seed: int) -> tuple[np.ndarray, np.ndarray]:
        tables = demo_tables(plan, rows=1500, seed=seed)
        return (
            asof_features(plan, tables, label.source_id),
            tables[label.source_id][label.field].to_numpy(),
        )

    (x0, y0), (x1, y1) = xy(0), xy(1)
    mean, std = np.nanmean(x0, 0), np.nanstd(x0, 0)  # seed 0's statistics for both
    x0, x1 = (np.nan_to_num((x - mean) / std) for x in (x0, x1))
    if plan.training.task == "regression":
        model = LinearRegression().fit(x0, y0)
        assert r2_score(y1, model.predict(x1)) > 0.3
    else:
        model = LogisticRegression(max_iter=1000).fit(x0, y0)
        assert roc_auc_score(y1, model.predict_proba(x1)[:, 1]) > 0.75


def load_spec(name: str) -> dict:
    """An example spec as a dict (YAML 1.1 reads the key `on` as True: undo that)."""
    raw = yaml.safe_load((SPECS / f"{name}.yaml").read_text())
    for alert in raw.get("alerts", {}).values():
        if True in alert:
            alert["on"] = alert.pop(True)
    return raw


def test_any_valid_plan_multiclass_string_keys(tmp_path: Path) -> None:
    raw = load_spec("churn")
    raw["features"]["entities"]["customer"]["dtype"] = "string"
    raw["training"].update(task="multiclass_classification", num_classes=3)
    raw["training"]["gates"] = {"min": {"accuracy": 0.4}}
    raw["training"]["early_stopping"] = {"metric": "accuracy", "patience": 2}
    raw["alerts"].pop("accuracy")
    raw["retraining"]["triggers"] = [{"schedule": "@weekly"}]
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(raw))
    plan = plan_file(tmp_path / "spec.yaml")
    tables = demo_tables(plan, rows=1200, seed=4)
    customers = tables["customers"]
    assert customers["customer_id"].map(type).eq(str).all()
    assert set(customers["churned"].unique()) == {0, 1, 2}
    assert _holdout_score(plan, tables) > 0.5  # accuracy; chance is about 1/3
