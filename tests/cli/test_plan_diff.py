"""`specml plan --target T`: a target-neutral Plan diff (compiler/diff.py) and its CLI rendering."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from specml.cli.compiled import PLAN_RECORD
from specml.cli.main import app
from specml.compiler.api import plan_file
from specml.compiler.diff import ABSENT, FieldChange, ResourceChange, diff_plans, render, resources
from specml.compiler.ir import Plan
from specml.compiler.load import load_file
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[2]


def _spec(
    tmp_path: Path, change: Callable[[dict[str, Any]], None] | None = None, name: str = "spec"
) -> Path:
    # specml's own loader: YAML 1.2 scalars (`on:` stays a string, as in the spec)
    document = copy.deepcopy(load_file(ROOT / "specs" / "churn.yaml").data)
    if change is not None:
        change(document)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def _plan(tmp_path: Path, change: Callable[[dict[str, Any]], None] | None = None) -> Plan:
    return plan_file(_spec(tmp_path, change, name=f"spec{len(list(tmp_path.iterdir()))}"))


def _set_lr(doc: dict[str, Any]) -> None:
    doc["training"]["hyperparameters"]["lr"] = 0.01


def test_changing_one_value_names_exactly_that_field(tmp_path: Path) -> None:
    diff = diff_plans(_plan(tmp_path), _plan(tmp_path, _set_lr))
    assert diff.changes == (
        ResourceChange(
            "training", "churn", "update", (FieldChange("hyperparameters.lr", 0.001, 0.01),)
        ),
    )
    assert diff.summary() == "0 to create, 1 to change, 0 to delete"


def test_a_rollout_step_change_is_a_field_of_the_rollout(tmp_path: Path) -> None:
    def more_canary(doc: dict[str, Any]) -> None:
        doc["rollout"]["steps"][1]["traffic"] = 10

    diff = diff_plans(_plan(tmp_path), _plan(tmp_path, more_canary))
    assert [(c.address, c.fields) for c in diff.changes] == [
        ("rollout.churn", (FieldChange("steps[1].traffic_percent", 5.0, 10.0),))
    ]


def test_adding_an_alert_is_a_create(tmp_path: Path) -> None:
    def add(doc: dict[str, Any]) -> None:
        doc["alerts"]["errors"] = {"metric": "error_rate", "critical": 0.05}

    diff = diff_plans(_plan(tmp_path), _plan(tmp_path, add))
    assert [(c.action, c.address) for c in diff.changes] == [("create", "alert.errors")]
    created = {f.path: f.new for f in diff.changes[0].fields}
    assert created["critical"] == 0.05 and created["kind"] == "error_rate"
    assert "" not in created and all(f.old is ABSENT for f in diff.changes[0].fields)


def test_removing_an_alert_is_a_delete(tmp_path: Path) -> None:
    def remove(doc: dict[str, Any]) -> None:
        del doc["alerts"]["accuracy"]

    diff = diff_plans(_plan(tmp_path), _plan(tmp_path, remove))
    assert [(c.action, c.address) for c in diff.changes] == [("delete", "alert.accuracy")]


def test_without_a_previous_plan_everything_is_created(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    diff = diff_plans(None, plan)
    assert not diff.has_previous
    assert diff.count("create") == len(resources(plan)) and len(diff.changes) == diff.count(
        "create"
    )
    addresses = {c.address for c in diff.changes}
    assert {
        "step.train",
        "alert.slow",
        "feature_view.usage",
        "gate.min.roc_auc",
        "endpoint.churn",
    } <= addresses
    assert "everything would be created" in render(diff, "local", colour=False)[0]


def test_identical_plans_have_no_changes(tmp_path: Path) -> None:
    diff = diff_plans(_plan(tmp_path), _plan(tmp_path), "old.json")
    assert diff.empty
    assert render(diff, "kubeflow", colour=False) == [
        "target kubeflow: no changes; the Plan matches old.json"
    ]


def test_human_rendering_is_a_terraform_style_diff(tmp_path: Path) -> None:
    def changes(doc: dict[str, Any]) -> None:
        _set_lr(doc)
        del doc["alerts"]["accuracy"]
        doc["alerts"]["errors"] = {"metric": "error_rate", "critical": 0.05}

    lines = render(
        diff_plans(_plan(tmp_path), _plan(tmp_path, changes), "rec.json"), "local", colour=False
    )
    text = "\n".join(lines)
    assert "  ~ training.churn  (will be updated)" in lines
    assert any(line.split() == ["~", "hyperparameters.lr", "0.001", "->", "0.01"] for line in lines)
    assert (
        "  + alert.errors  (will be created)" in lines
        and "  - alert.accuracy  (will be deleted)" in lines
    )
    assert text.endswith("Plan: 1 to create, 1 to change, 1 to delete.")
    # an added or removed resource lists its fields, like terraform's `+ attr = value`
    added = lines.index("  + alert.errors  (will be created)")
    assert lines[added + 1].split() == ["+", "action", '"notify"']
    assert any(line.split() == ["+", "critical", "0.05"] for line in lines[added:])
    removed = lines.index("  - alert.accuracy  (will be deleted)")
    assert lines[removed + 1].split()[0] == "-"
    # the first plan (nothing recorded) stays a list of addresses
    first = render(diff_plans(None, _plan(tmp_path)), "local", colour=False)
    assert all(not line.startswith("      ") for line in first)
    coloured = "\n".join(render(diff_plans(None, _plan(tmp_path)), "local", colour=True))
    assert "[green]  + step.train[/]" in coloured


class _StubTarget:
    """Stands in for a target so these tests need no target stack (kfp, pulumi, feast)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def check(self, plan: Plan) -> list:
        return []


def _target(name: str) -> Any:
    """The real local target (its imports are lazy), a stub for the others."""
    from specml.targets.local.target import LocalTarget

    return LocalTarget() if name == "local" else _StubTarget(name)


def _invoke(monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str]:
    monkeypatch.setattr("specml.targets.get_target", _target)
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout


def test_cli_diffs_against_the_plan_compile_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / PLAN_RECORD).write_text(plan_file(_spec(tmp_path)).to_json())
    changed = _spec(tmp_path, _set_lr, name="changed")
    code, stdout = _invoke(
        monkeypatch,
        "plan",
        str(changed),
        "--target",
        "kubeflow",
        "--against",
        str(out),
        "--format",
        "json",
    )
    assert code == 0
    report = json.loads(stdout)
    assert report["has_previous"] and report["previous"] == str(out / PLAN_RECORD)
    assert report["summary"] == {"create": 0, "update": 1, "delete": 0}
    assert report["changes"][0]["fields"] == [
        {"path": "hyperparameters.lr", "old": 0.001, "new": 0.01}
    ]
    code, stdout = _invoke(
        monkeypatch, "plan", str(changed), "--target", "sagemaker", "-o", str(out)
    )
    assert code == 0 and "0.001 -> 0.01" in stdout and "Plan: 0 to create, 1 to change" in stdout


def test_cli_local_diffs_against_the_last_applied_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    applied = plan_file(_spec(tmp_path))
    state_dir = tmp_path / applied.targets.local.workdir
    state_dir.mkdir(parents=True)
    # the shape targets/local/state.py writes: the applied Plan under `plan`, beside run records
    state = {
        "status": "applied",
        "spec_hash": applied.spec_hash,
        "plan": applied.model_dump(mode="json"),
    }
    (state_dir / "state.json").write_text(json.dumps(state))

    def fewer_alerts(doc: dict[str, Any]) -> None:
        del doc["alerts"]["slow"]

    code, stdout = _invoke(
        monkeypatch, "plan", str(_spec(tmp_path, fewer_alerts, "spec")), "--target", "local"
    )
    assert code == 0
    assert "- alert.slow" in stdout and "Plan: 0 to create, 0 to change, 1 to delete." in stdout


def test_cli_first_plan_says_everything_would_be_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, stdout = _invoke(monkeypatch, "plan", str(_spec(tmp_path)), "--target", "local")
    assert code == 0 and "no previous state; everything would be created" in stdout


def test_cli_unreadable_record_warns_and_plans_from_scratch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / PLAN_RECORD).write_text('{"ir_version": "0", "old": true}')
    code, stdout = _invoke(
        monkeypatch,
        "plan",
        str(_spec(tmp_path)),
        "--target",
        "kubeflow",
        "-o",
        str(out),
        "--format",
        "json",
    )
    report = json.loads(stdout)
    assert code == 0 and report["has_previous"] is False
    assert [d["code"] for d in report["diagnostics"]] == ["stale_state"]
    assert report["diagnostics"][0]["severity"] == "warning"


def test_real_local_target_state_is_read(tmp_path: Path) -> None:
    """Against the local target's own state writer, not a hand-made file: the formats must agree."""
    state_module = pytest.importorskip("specml.targets.local.state")
    applied = plan_file(_spec(tmp_path))
    state_module.save_state(
        state_module.workdir(applied, tmp_path),
        {
            "status": "applied",
            "spec_hash": applied.spec_hash,
            "plan": applied.model_dump(mode="json"),
        },
    )
    result = CliRunner().invoke(
        app, ["plan", str(_spec(tmp_path, _set_lr)), "--target", "local", "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [(c["kind"], c["action"]) for c in report["changes"]] == [("training", "update")]
    assert report["previous"].endswith("state.json")


@pytest.mark.parametrize(("target", "extra"), [("kubeflow", "kfp"), ("sagemaker", "pulumi_aws")])
def test_real_target_plan_against_its_compiled_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str, extra: str
) -> None:
    """Compile with the real target, then plan: nothing changed, then exactly the edited fields."""
    pytest.importorskip(extra)
    spec, out = _spec(tmp_path), tmp_path / "deploy"
    runner = CliRunner()
    assert (
        runner.invoke(app, ["compile", str(spec), "--target", target, "-o", str(out)]).exit_code
        == 0
    )
    assert (out / PLAN_RECORD).is_file()
    same = runner.invoke(
        app, ["plan", str(spec), "--target", target, "--against", str(out), "--format", "json"]
    )
    assert same.exit_code == 0, same.output
    assert json.loads(same.stdout)["summary"] == {"create": 0, "update": 0, "delete": 0}

    def edit(doc: dict[str, Any]) -> None:
        _set_lr(doc)
        doc["rollout"]["steps"][1]["traffic"] = 10
        del doc["alerts"]["slow"]

    changed = _spec(tmp_path, edit, name="changed")
    result = runner.invoke(
        app, ["plan", str(changed), "--target", target, "--against", str(out), "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["target"] == target and report["previous"] == str(out / PLAN_RECORD)
    assert {
        (c["action"], c["kind"], c["id"]): c["fields"]
        for c in report["changes"]
        if c["action"] == "update"
    } == {
        ("update", "training", "churn"): [
            {"path": "hyperparameters.lr", "old": 0.001, "new": 0.01}
        ],
        ("update", "rollout", "churn"): [
            {"path": "steps[1].traffic_percent", "old": 5.0, "new": 10.0}
        ],
    }
    assert [
        (c["action"], c["kind"], c["id"]) for c in report["changes"] if c["action"] != "update"
    ] == [("delete", "alert", "slow")]
    human = runner.invoke(app, ["plan", str(changed), "--target", target, "--against", str(out)])
    assert "~ rollout.churn" in human.stdout and "- alert.slow" in human.stdout
    assert "Plan: 0 to create, 2 to change, 1 to delete." in human.stdout
