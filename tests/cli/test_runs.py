"""`specml runs`: the local target's apply history, newest first, human and JSON."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from specml.cli.main import app
from specml.compiler.api import plan_file
from specml.targets.local.state import save_state, workdir
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def _spec_copy(tmp_path: Path) -> Path:
    spec = tmp_path / "churn.yaml"
    shutil.copy(ROOT / "specs" / "churn.yaml", spec)
    return spec


def _record(run_id: str, status: str, version: str | None, auc: float) -> dict:
    return {
        "run_id": run_id,
        "started": f"2026-11-2{run_id[-1]}T10:00:00+00:00",
        "status": status,
        "model_version": version,
        "metrics": {"roc_auc": auc},
        "step_seconds": {"train": 1.5},
    }


def test_runs_lists_history_newest_first_with_aliases(tmp_path: Path) -> None:
    spec = _spec_copy(tmp_path)
    state = {
        "runs": [
            _record("run1", "applied", "1", 0.91),
            _record("run2", "gate_failed", None, 0.55),
            _record("run3", "applied", "2", 0.93),
        ],
        "aliases": {"champion": "1", "challenger": "2"},
    }
    save_state(workdir(plan_file(spec), tmp_path), state)

    result = runner.invoke(app, ["runs", str(spec), "--format", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [r["run_id"] for r in doc["runs"]] == ["run3", "run2", "run1"]
    assert doc["aliases"] == {"champion": "1", "challenger": "2"}

    limited = json.loads(
        runner.invoke(app, ["runs", str(spec), "--format", "json", "--limit", "1"]).stdout
    )
    assert [r["run_id"] for r in limited["runs"]] == ["run3"]

    human = runner.invoke(app, ["runs", str(spec)])
    assert human.exit_code == 0
    assert human.stdout.index("run3") < human.stdout.index("run1")
    assert "gate_failed" in human.stdout and "champion=v1" in human.stdout


def test_runs_before_any_apply_says_how_to_start(tmp_path: Path) -> None:
    result = runner.invoke(app, ["runs", str(_spec_copy(tmp_path))])
    assert result.exit_code == 0
    assert "no runs yet" in result.stdout


def test_runs_on_an_invalid_spec_exits_1(tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text((ROOT / "specs" / "churn.yaml").read_text().replace("task:", "tsk:", 1))
    assert runner.invoke(app, ["runs", str(spec)]).exit_code == 1
