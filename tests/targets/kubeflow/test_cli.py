"""`specml compile SPEC --target kubeflow -o DIR [--check]` through the real CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from kubeflow_testlib import OVERLAYS, ROOT, SPECS, rendered
from specml.cli.main import app
from typer.testing import CliRunner

runner = CliRunner()


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _compile(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["compile", *args, "--target", "kubeflow"])
    return result.exit_code, result.output


def test_specml_executable_compiles_byte_identical_trees_and_check_passes(tmp_path: Path) -> None:
    specml = Path(sys.executable).with_name("specml")  # the console script of this venv
    for out in ("a", "b"):
        subprocess.run(
            [
                str(specml),
                "compile",
                str(SPECS / "churn.yaml"),
                "--target",
                "kubeflow",
                "-o",
                str(tmp_path / out),
            ],
            check=True,
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
    first, second = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert first == second, "two compiles must write the same bytes"
    expected = {rel: text.encode() for rel, text in rendered("churn").items()}
    assert {rel: data for rel, data in first.items() if rel in expected} == expected
    assert set(first) - set(expected) == {".specml-plan.json"}  # the CLI's plan record
    code, output = _compile(str(SPECS / "churn.yaml"), "-o", str(tmp_path / "a"), "--check")
    assert code == 0, output
    assert "up to date" in output


def test_check_fails_when_the_committed_output_drifts(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _compile(str(SPECS / "fraud.yaml"), "-o", str(out))[0] == 0
    pipeline = out / "pipeline.yaml"
    original = pipeline.read_text()
    pipeline.write_text(original.replace("enableCache: true", "enableCache: false", 1))
    code, output = _compile(str(SPECS / "fraud.yaml"), "-o", str(out), "--check")
    assert code == 1 and "pipeline.yaml" in output and "out of date" in output
    pipeline.write_text(original)
    (out / "rollout" / "step-09-traffic-7.yaml").write_text("stale\n")
    code, output = _compile(str(SPECS / "fraud.yaml"), "-o", str(out), "--check")
    assert code == 1 and "step-09-traffic-7.yaml" in output
    (out / "rollout" / "step-09-traffic-7.yaml").unlink()
    (out / "rollout" / "rollback.yaml").unlink()
    code, output = _compile(str(SPECS / "fraud.yaml"), "-o", str(out), "--check")
    assert code == 1 and "rollback.yaml" in output
    assert _compile(str(SPECS / "fraud.yaml"), "-o", str(out))[0] == 0
    assert _compile(str(SPECS / "fraud.yaml"), "-o", str(out), "--check")[0] == 0


def test_demand_compiles_only_with_kubeflow_settings(tmp_path: Path) -> None:
    code, output = _compile(str(SPECS / "demand.yaml"), "-o", str(tmp_path / "bare"))
    assert code == 1 and "targets.kubeflow.image" in output
    assert not (tmp_path / "bare").exists()
    [overlay] = OVERLAYS["demand"]
    out = tmp_path / "demand"
    code, output = _compile(str(SPECS / "demand.yaml"), "--overlay", overlay, "-o", str(out))
    assert code == 0, output
    written = {rel: data.decode() for rel, data in _tree(out).items() if rel != ".specml-plan.json"}
    assert written == rendered("demand")
