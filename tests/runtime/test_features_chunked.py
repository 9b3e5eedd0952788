"""The point-in-time join in chunks gives exactly the rows and values of one join."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from specml.compiler.api import plan_file
from specml.runtime.contract import StepContext, run_step
from specml.runtime.demo_data import write_demo_data
from specml.runtime.steps import features
from specml.runtime.steps.common import TIMESTAMP, entity_join_keys, read_source

ROOT = Path(__file__).resolve().parents[2]


def test_chunked_join_equals_one_join(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEAST_USAGE", "False")
    spec = tmp_path / "churn.yaml"
    shutil.copy(ROOT / "specs" / "churn.yaml", spec)
    plan = plan_file(spec)
    write_demo_data(plan, tmp_path, rows=700, seed=3)
    ctx = StepContext(workdir=tmp_path / "wd", data_dir=tmp_path)
    repo = tmp_path / "wd" / "feature_repo"
    run_step("materialize_features", plan, ctx, {}, {"feature_repo": repo})
    label = plan.features.label
    source = next(s for s in plan.features.sources if s.id == label.source_id)
    keys = entity_join_keys(plan)
    entity_df = read_source(source, tmp_path)[[*keys, source.timestamp_field]].rename(
        columns={source.timestamp_field: TIMESTAMP}
    )
    whole = features.historical_features(repo, plan, entity_df)
    monkeypatch.setattr(features, "ENTITY_CHUNK_ROWS", 128)
    chunked = features.historical_features(repo, plan, entity_df)
    assert len(whole) == len(entity_df) > 3 * 128
    pd.testing.assert_frame_equal(chunked, whole)
