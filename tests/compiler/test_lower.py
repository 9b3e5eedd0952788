"""compiler/lower.py: the spec -> the Plan; and a golden Plan per example (`--update-goldens`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from specml.compiler.api import plan_file
from specml.compiler.ir import Plan

ROOT = Path(__file__).resolve().parents[2]
GOLDENS = Path(__file__).parent / "goldens"
EXAMPLES = sorted((ROOT / "specs").glob("*.yaml"))


@pytest.mark.parametrize("spec", EXAMPLES, ids=lambda p: p.stem)
def test_plan_matches_its_golden(spec: Path, request: pytest.FixtureRequest) -> None:
    golden = GOLDENS / f"{spec.stem}.json"
    text = plan_file(spec).to_json()
    if request.config.getoption("--update-goldens"):
        GOLDENS.mkdir(exist_ok=True)
        golden.write_text(text)
    assert golden.exists(), f"no golden for {spec.name}: run pytest --update-goldens"
    assert text == golden.read_text(), f"{golden.name} differs (pytest --update-goldens)"


def test_plan_round_trips_through_json() -> None:
    plan = plan_file(ROOT / "specs" / "churn.yaml")
    assert Plan.from_json(plan.to_json()) == plan
    assert json.loads(plan.to_json())["ir_version"] == plan.ir_version


def test_defaults_are_filled_and_references_resolved() -> None:
    plan = plan_file(ROOT / "specs" / "churn.yaml")
    views = {v.id for v in plan.features.views}
    assert all(f.view_id in views for f in plan.training.features)
    assert plan.targets.local.keep_online_stores == 1
    assert plan.endpoint.batching.max_batch_size > 0
    assert [s.name for s in plan.steps][0] == "validate_data"


def test_the_evaluate_step_guards_export_and_registration() -> None:
    plan = plan_file(ROOT / "specs" / "churn.yaml")
    guarded = {s.name for s in plan.steps if s.condition}
    assert {"export_onnx", "register"} <= guarded


def test_the_spec_hash_changes_with_any_field_and_only_then(tmp_path: Path) -> None:
    spec = tmp_path / "churn.yaml"
    text = (ROOT / "specs" / "churn.yaml").read_text()
    spec.write_text(text)
    first = plan_file(spec).spec_hash
    spec.write_text("# a comment changes nothing\n" + text)
    assert plan_file(spec).spec_hash == first
    assert plan_file(spec, overrides=["training.seed=8"]).spec_hash != first
