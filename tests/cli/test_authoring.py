"""`specml init` starter specs and `specml explain PATH`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from specml.cli.authoring import TASKS, lookup
from specml.cli.main import app
from specml.compiler.api import validate_file
from specml.compiler.docs import all_fields
from specml.compiler.errors import SpecError
from typer.testing import CliRunner


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("task", TASKS)
def test_each_task_starter_validates(tmp_path: Path, task: str) -> None:
    spec = tmp_path / "specs" / f"{task}.yaml"
    code, _, _ = _run("init", "--task", task, "-o", str(spec))
    assert code == 0
    validated = validate_file(spec)
    assert validated.spec.training.task == task
    assert not [w for w in validated.warnings if w.severity == "error"]
    text = spec.read_text()
    assert text.startswith("# yaml-language-server: $schema=")
    assert text.count("#") > 10  # commented for a first-time author


def test_init_modeline_points_at_the_nearest_schema(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "specml.schema.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    assert _run("init", "-o", "specs/team/new.yaml")[0] == 0
    first = (tmp_path / "specs" / "team" / "new.yaml").read_text().splitlines()[0]
    assert first == "# yaml-language-server: $schema=../../schemas/specml.schema.json"


def test_init_without_output_prints_the_spec() -> None:
    code, out, _ = _run("init", "--task", "regression")
    assert code == 0 and "task: regression" in out and "max: {rmse: 25.0}" in out


def test_init_does_not_overwrite_without_force(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("mine\n")
    code, _, err = _run("init", "-o", str(spec))
    assert code == 2 and "already exists" in err and spec.read_text() == "mine\n"
    assert _run("init", "-o", str(spec), "--force")[0] == 0
    assert spec.read_text().startswith("# yaml-language-server")


def test_init_unknown_task_is_a_usage_error() -> None:
    code, _, err = _run("init", "--task", "regresion")
    assert code == 2 and "did you mean 'regression'?" in err


def test_explain_a_leaf_field() -> None:
    code, out, _ = _run("explain", "training.hyperparameters.lr")
    assert code == 0
    lines = [line.strip() for line in out.splitlines()]
    assert lines[0] == "training.hyperparameters.lr"
    assert "type:        number, > 0, <= 10" in lines
    assert "default:     0.001" in lines
    assert "description: Learning rate." in lines
    assert "example:     0.001" in lines


def test_explain_a_list_of_forms_lists_each_forms_keys() -> None:
    code, out, _ = _run("explain", "rollout.steps")
    assert code == 0
    assert "list of mapping (ShadowStep | TrafficStep)" in out
    assert "keys of rollout.steps[] (ShadowStep): shadow, sample" in out
    assert "keys of rollout.steps[] (TrafficStep): traffic, hold" in out


def test_explain_accepts_indexes_and_concrete_names() -> None:
    assert [f.path for f in lookup("rollout.steps[2].traffic")] == ["rollout.steps[].traffic"]
    metric = lookup("alerts.feature_drift.metric")
    assert {f.variant for f in metric} == {
        "DriftAlert",
        "LatencyAlert",
        "ErrorRateAlert",
        "MetricDropAlert",
    }
    # a literal key wins over a `<name>` wildcard
    assert [f.path for f in lookup("training.gates.min")] == ["training.gates.min"]


def test_explain_json() -> None:
    code, out, _ = _run("explain", "serving.replicas.max", "--format", "json")
    assert code == 0
    (entry,) = json.loads(out)
    assert (
        entry["default"] == "1"
        and entry["required"] is False
        and entry["description"] == "Most replicas."
    )


@pytest.mark.parametrize(
    ("typo", "guess"),
    [
        ("training.hyperparamters.lr", "training.hyperparameters.lr"),
        ("rollout.stpes", "rollout.steps"),
        ("training.lrr", "training.hyperparameters.lr"),
    ],
)
def test_explain_unknown_path_exits_2_with_did_you_mean(typo: str, guess: str) -> None:
    code, out, err = _run("explain", typo)
    assert code == 2 and out == ""
    assert f"no spec field at '{typo}'" in err and f"did you mean '{guess}'?" in err


def test_every_documented_field_can_be_explained() -> None:
    for field in all_fields():
        assert field in lookup(field.path), field.path
    with pytest.raises(SpecError):
        lookup("")


def test_init_without_a_schema_says_how_to_write_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert _run("init", "-o", "specs/a.yaml")[0] == 0
    lines = (tmp_path / "specs" / "a.yaml").read_text().splitlines()
    assert lines[0] == "# yaml-language-server: $schema=../schemas/specml.schema.json"
    assert "`specml schema`" in lines[1]
    assert _run("schema")[0] == 0  # writes ./schemas/, exactly where the modeline points
    assert (tmp_path / "schemas" / "specml.schema.json").is_file()
    assert _run("init", "-o", "specs/b.yaml")[0] == 0
    assert "specml schema" not in (tmp_path / "specs" / "b.yaml").read_text().splitlines()[1]
    assert validate_file(tmp_path / "specs" / "a.yaml").spec.metadata.name == "a"  # its file


@pytest.mark.parametrize(
    ("stem", "name"),
    [("2024_churn", "churn"), ("a" * 60, "a" * 52), ("My Churn_v2", "my-churn-v2")],
)
def test_init_names_the_system_validly_from_any_file_name(
    tmp_path: Path, stem: str, name: str
) -> None:
    spec = tmp_path / f"{stem}.yaml"
    assert _run("init", "-o", str(spec))[0] == 0
    assert validate_file(spec).spec.metadata.name == name
