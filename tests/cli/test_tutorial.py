"""docs/tutorial.md's commands, as written, on a copy of specs/ (slow: two real applies), and the
machine-readable output of an apply with Feast's materialization running."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ANSI = re.compile(r"\x1b\[")

pytestmark = pytest.mark.slow


def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "specml.cli.main", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=900,
    )


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "specs", tmp_path / "specs")
    shutil.copytree(ROOT / "schemas", tmp_path / "schemas")
    return tmp_path


def _ok(done: subprocess.CompletedProcess[str], code: int = 0) -> str:
    assert done.returncode == code, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def test_the_tutorial_runs_as_written(project: Path) -> None:
    spec = "specs/churn.yaml"
    _ok(_run(project, "init", "--task", "binary_classification", "-o", "specs/my-churn.yaml"))
    _ok(_run(project, "validate", "specs/my-churn.yaml"))
    assert "Learning rate" in _ok(_run(project, "explain", "training.hyperparameters.lr"))
    _ok(_run(project, "validate", spec))
    typo = _ok(_run(project, "validate", spec, "training.hyperparameters.epoch=5"), 1)
    assert "did you mean 'training.hyperparameters.epochs'?" in typo
    _ok(_run(project, "demo-data", spec, "--rows", "4000", "--seed", "0"))
    _ok(_run(project, "plan", spec, "--target", "local"))
    applied = _ok(_run(project, "apply", spec, "--target", "local"))
    assert "champion v1" in applied
    diff = _ok(
        _run(project, "plan", spec, "training.hyperparameters.lr=0.002", "--target", "local")
    )
    assert "hyperparameters.lr" in diff and "0.001 -> 0.002" in diff
    # the challenger step
    _ok(_run(project, "demo-data", spec, "--rows", "8000", "--seed", "1"))
    planned = _ok(_run(project, "plan", spec, "--target", "local"))
    assert "data changed" in planned and "no changes" not in planned
    challenger = _ok(_run(project, "apply", spec, "~training.gates.must_beat_production"))
    assert "challenger v2" in challenger
    status = json.loads(_run(project, "rollout", "status", spec, "-f", "json").stdout)
    assert status["rollout"] is None  # published, not rolling out yet: exit 0, and it says so
    promoted = _ok(_run(project, "rollout", "promote", spec))
    assert "v2 promoted to champion" in promoted
    out = "deploy/kubeflow/churn"
    _ok(_run(project, "compile", spec, "--target", "kubeflow", "-o", out))
    _ok(_run(project, "compile", spec, "--target", "kubeflow", "-o", out, "--check"))
    _ok(_run(project, "plan", spec, "--target", "kubeflow", "--against", out))


def test_apply_json_parses_and_a_gate_failure_has_its_line(tmp_path: Path) -> None:
    spec = tmp_path / "churn.yaml"
    shutil.copy(ROOT / "specs" / "churn.yaml", spec)
    _ok(_run(tmp_path, "demo-data", str(spec), "--rows", "3000"))
    done = _run(tmp_path, "apply", str(spec), "--format", "json")
    document = json.loads(_ok(done) and done.stdout)  # Feast's banner went to stderr
    assert document["result"]["status"] == "applied"
    assert "Materializing" in done.stderr and not ANSI.search(done.stdout + done.stderr)
    assert "INFO" not in done.stderr  # no MLflow log lines
    failed = _run(tmp_path, "apply", str(spec), "training.gates.min.roc_auc=0.999", "-f", "json")
    assert failed.returncode == 3
    gate = json.loads(failed.stdout)["diagnostics"][0]
    assert gate["code"] == "gate_failed" and gate["path"] == "training.gates.min.roc_auc"
    lines = spec.read_text().splitlines()
    assert lines[gate["line"] - 1].lstrip().startswith("min:")
