"""Overlays and Hydra-grammar overrides: they change the Plan, and their errors point at them."""

from __future__ import annotations

from pathlib import Path

import pytest
from specml.compiler.api import plan_file, validate_file
from specml.compiler.errors import Diagnostic, SpecError

ROOT = Path(__file__).resolve().parents[2]
CHURN = ROOT / "specs" / "churn.yaml"
DEMAND = ROOT / "specs" / "demand.yaml"


def _errors(spec: Path, **kw: list[str]) -> list[Diagnostic]:
    with pytest.raises(SpecError) as info:
        validate_file(spec, **kw)
    return info.value.errors


def _one(spec: Path, **kw: list[str]) -> Diagnostic:
    errors = _errors(spec, **kw)
    assert len(errors) == 1, [d.render() for d in errors]
    return errors[0]


# ---- overlays ------------------------------------------------------------------------------
def test_named_overlay_changes_the_plan_and_nothing_else() -> None:
    base = plan_file(CHURN)
    prod = plan_file(CHURN, overlays=["prod"])
    assert (prod.endpoint.min_replicas, prod.endpoint.max_replicas) == (3, 10)
    assert prod.training.hyperparameters.epochs == 50
    assert prod.training.hyperparameters.lr == base.training.hyperparameters.lr
    assert prod.features == base.features
    assert prod.spec_hash != base.spec_hash


def test_composed_yaml_is_the_validated_document_with_its_layers() -> None:
    """What a run logs as its spec: overlays and overrides applied, and where they came from."""
    import yaml
    from specml.compiler.api import validate_text

    validated = validate_file(
        CHURN, overlays=["prod"], overrides=["training.hyperparameters.lr=0.02"]
    )
    text = validated.composed_yaml()
    header = [line for line in text.splitlines() if line.startswith("# layer: ")]
    assert header[0] == f"# layer: {validated.composed.base_file}"
    assert header[-1] == "# layer: <override 1>" and len(header) == 3
    doc = yaml.safe_load(text)
    assert doc == validated.composed.data
    assert doc["training"]["hyperparameters"]["lr"] == 0.02
    assert doc["serving"]["replicas"]["min"] == 3  # from the prod overlay
    again = validate_text(text, "logged.yaml")  # the logged spec validates to the same spec
    assert again.spec == validated.spec


def test_overlay_errors_point_at_the_overlay_file(tmp_path: Path) -> None:
    overlay = tmp_path / "bad.yaml"
    overlay.write_text(
        "# overlay with two mistakes\n"
        "serving:\n"
        "  replicas: {min: 9}\n"
        "training:\n"
        "  hyperparameters: {epochz: 5}\n"
    )
    errors = _errors(CHURN, overlays=[str(overlay)])
    by_path = {d.yaml_path: d for d in errors}
    replicas = by_path["serving.replicas.min"]
    assert (replicas.file, replicas.line, replicas.col) == (str(overlay), 3, 19)
    assert "larger than serving.replicas.max (4)" in replicas.message
    typo = by_path["training.hyperparameters.epochz"]
    assert (typo.file, typo.line, typo.col) == (str(overlay), 5, 21)
    assert typo.hint == "did you mean 'epochs'?"


def test_base_errors_still_point_at_the_base_file_when_an_overlay_is_used(tmp_path: Path) -> None:
    base = tmp_path / "spec.yaml"
    base.write_text(CHURN.read_text().replace("ttl: 7d", "ttl: 7days"))
    overlay = tmp_path / "o.yaml"
    overlay.write_text("training:\n  seed: 3\n")
    error = _one(base, overlays=[str(overlay)])
    line = next(i for i, t in enumerate(base.read_text().splitlines(), 1) if "7days" in t)
    assert (error.file, error.line) == (str(base), line)


def test_overlay_that_is_not_a_mapping(tmp_path: Path) -> None:
    overlay = tmp_path / "list.yaml"
    overlay.write_text("- serving\n")
    error = _one(CHURN, overlays=[str(overlay)])
    assert error.file == str(overlay) and "mapping" in error.message


def test_missing_overlay_is_a_load_error() -> None:
    error = _one(CHURN, overlays=["no-such-overlay"])
    assert "not found" in error.message


# ---- overrides -----------------------------------------------------------------------------
def test_value_override_changes_the_plan() -> None:
    base = plan_file(CHURN)
    changed = plan_file(CHURN, overrides=["training.hyperparameters.lr=0.01"])
    assert changed.training.hyperparameters.lr == 0.01
    assert base.training.hyperparameters.lr != 0.01
    assert changed.spec_hash != base.spec_hash
    assert changed.model_dump(exclude={"spec_hash", "training"}) == base.model_dump(
        exclude={"spec_hash", "training"}
    )


def test_list_index_and_list_value_overrides() -> None:
    plan = plan_file(
        CHURN, overrides=["rollout.steps.1.traffic=10", "training.model.hidden=[16,8]"]
    )
    assert plan.rollout is not None and plan.rollout.steps[1].traffic_percent == 10
    assert plan.training.model.hidden == (16, 8)


def test_add_override_with_plus_and_force_add() -> None:
    plan = plan_file(CHURN, overrides=["+training.early_stopping.min_delta=0.01"])
    assert plan.training.early_stopping is not None
    assert plan.training.early_stopping.min_delta == 0.01
    error = _one(CHURN, overrides=["+training.seed=3"])
    assert error.file == "<override 1>" and "already exists" in error.message
    assert error.hint and "training.seed=" in error.hint
    assert plan_file(CHURN, overrides=["++training.seed=3"]).training.seed == 3


def test_delete_override() -> None:
    assert plan_file(DEMAND).rollout is not None
    assert plan_file(DEMAND, overrides=["~rollout"]).rollout is None
    error = _one(CHURN, overrides=["~training.nope"])
    assert error.file == "<override 1>" and "cannot delete" in error.message


def test_deleting_a_section_others_depend_on_is_reported_at_the_dependant() -> None:
    error = _one(CHURN, overrides=["~rollout"])  # alert `slow` has action: rollback
    assert error.file == str(CHURN) and error.yaml_path == "alerts.slow.action"


def test_invalid_override_value_points_at_that_override() -> None:
    error = _one(CHURN, overrides=["training.seed=3", "training.hyperparameters.epochs=many"])
    assert (error.file, error.line, error.col) == ("<override 2>", 1, 33)
    assert error.yaml_path == "training.hyperparameters.epochs"
    assert "whole number" in error.message


def test_cross_field_rule_broken_by_override_points_at_it() -> None:
    error = _one(CHURN, overrides=["serving.replicas.min=50"])
    assert (error.file, error.col) == ("<override 1>", 22)
    assert "larger than serving.replicas.max" in error.message


def test_secret_given_as_override_is_refused() -> None:
    error = _one(CHURN, overrides=["metadata.description=AKIAIOSFODNN7EXAMPLE"])
    assert error.file == "<override 1>" and error.code == "secret"


@pytest.mark.parametrize(
    ("override", "hint"),
    [
        ("training.hyperparameters.epoch=5", "did you mean 'training.hyperparameters.epochs'?"),
        ("+training.hyperparameters.optimzer=adamw", "did you mean 'optimizer'?"),
    ],
)
def test_unknown_key_override_gets_did_you_mean(override: str, hint: str) -> None:
    error = _one(CHURN, overrides=[override])
    assert error.file == "<override 1>"
    assert error.hint == hint


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("training.lr=[1,", "cannot parse override"),
        ("training.seed=1,2", "is a sweep"),
        ("rollout.steps.9.traffic=10", "is not in the spec"),
        ("nope.x=1", "'nope' is not in the spec"),
    ],
)
def test_malformed_overrides(override: str, fragment: str) -> None:
    error = _one(CHURN, overrides=[override])
    assert error.file == "<override 1>" and error.line == 1
    assert fragment in error.message


def test_overrides_do_not_mutate_the_loaded_document() -> None:
    first = plan_file(CHURN, overrides=["training.seed=99"])
    again = plan_file(CHURN)
    assert first.training.seed == 99 and again.training.seed == 7
