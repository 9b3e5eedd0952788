"""CLI mechanics: exit codes, --check, unknown targets, schema staleness, JSON output."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
from specml.cli.main import app
from specml.targets import REGISTRY
from specml.targets.base import EmitResult
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[2]
CHURN = ROOT / "specs" / "churn.yaml"
runner = CliRunner()


class _EchoTarget:
    """A minimal target for testing the CLI's compile plumbing: writes the plan's name and hash."""

    name = "echo"
    extra = "core"

    def check(self, plan):
        return []

    def emit(self, plan, out_dir: Path) -> EmitResult:
        (out_dir / "system.txt").write_text(f"{plan.system.name}\n{plan.spec_hash}\n")
        (out_dir / "nested").mkdir()
        (out_dir / "nested" / "lr.txt").write_text(f"{plan.training.hyperparameters.lr}\n")
        return EmitResult(out_dir=out_dir, files=("nested/lr.txt", "system.txt"))


@pytest.fixture
def echo_target(monkeypatch):
    module = types.ModuleType("specml_test_echo_target")
    module.EchoTarget = _EchoTarget  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "specml_test_echo_target", module)
    monkeypatch.setitem(REGISTRY, "echo", ("specml_test_echo_target", "EchoTarget", "core"))
    return "echo"


def test_compile_writes_files_and_check_detects_drift(tmp_path, echo_target):
    out = tmp_path / "out"
    result = runner.invoke(app, ["compile", str(CHURN), "--target", echo_target, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "system.txt").read_text().startswith("churn\nsha256:")
    assert json.loads((out / ".specml-plan.json").read_text())["system"]["name"] == "churn"

    ok = runner.invoke(
        app, ["compile", str(CHURN), "--target", echo_target, "-o", str(out), "--check"]
    )
    assert ok.exit_code == 0, ok.output

    # an override changes the compiled output: --check must now fail and name the file
    stale = runner.invoke(
        app,
        [
            "compile",
            str(CHURN),
            "training.hyperparameters.lr=0.01",
            "--target",
            echo_target,
            "-o",
            str(out),
            "--check",
        ],
    )
    assert stale.exit_code == 1
    assert "nested/lr.txt (changed)" in stale.output

    (out / "extra.txt").write_text("left over\n")
    unexpected = runner.invoke(
        app, ["compile", str(CHURN), "--target", echo_target, "-o", str(out), "--check"]
    )
    assert unexpected.exit_code == 1 and "extra.txt (unexpected)" in unexpected.output


def test_recompile_replaces_stale_files(tmp_path, echo_target):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("from an older compile\n")
    result = runner.invoke(app, ["compile", str(CHURN), "--target", echo_target, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert not (out / "old.txt").exists()
    assert sorted(p.name for p in out.iterdir()) == [".specml-plan.json", "nested", "system.txt"]


def test_unknown_target_suggests_the_closest(tmp_path):
    result = runner.invoke(app, ["compile", str(CHURN), "--target", "kubeflw", "-o", str(tmp_path)])
    assert result.exit_code == 2
    assert "unknown target 'kubeflw'" in result.output
    assert "did you mean 'kubeflow'" in result.output
    assert "Traceback" not in result.output


def test_invalid_spec_exit_code_and_json_document(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(CHURN.read_text().replace("lr: 1.0e-3", "lr: -1"))
    result = runner.invoke(app, ["validate", str(bad), "--format", "json"])
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert document["ok"] is False and document["invalid"] == 1
    (problem,) = document["diagnostics"]
    assert problem["path"] == "training.hyperparameters.lr"
    line = next(i for i, text in enumerate(bad.read_text().splitlines(), 1) if "lr: -1" in text)
    assert problem["line"] == line


def test_missing_spec_file_is_an_error_not_a_traceback(tmp_path):
    result = runner.invoke(app, ["validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1
    assert "file not found" in result.output and "Traceback" not in result.output


def test_two_specs_where_one_is_expected_is_a_usage_error():
    result = runner.invoke(app, ["plan", str(CHURN), str(ROOT / "specs" / "demand.yaml")])
    assert result.exit_code == 2
    assert "expected exactly one spec file" in result.output


def test_plan_json_is_the_canonical_plan():
    from specml.compiler.api import plan_file

    result = runner.invoke(app, ["plan", str(CHURN), "--format", "json"])
    assert result.exit_code == 0
    assert result.stdout == plan_file(CHURN).to_json()


def test_schema_check_detects_a_stale_file(tmp_path):
    write = runner.invoke(app, ["schema", "-o", str(tmp_path)])
    assert write.exit_code == 0
    assert runner.invoke(app, ["schema", "-o", str(tmp_path), "--check"]).exit_code == 0
    schema_file = tmp_path / "specml.schema.json"
    schema_file.write_text(schema_file.read_text().replace("Learning rate.", "Step size."))
    stale = runner.invoke(app, ["schema", "-o", str(tmp_path), "--check"])
    assert stale.exit_code == 1 and "stale" in stale.output


def test_committed_schemas_are_current():
    result = runner.invoke(app, ["schema", "-o", str(ROOT / "schemas"), "--check"])
    assert result.exit_code == 0, "schemas/ is stale: run `specml schema` and commit"


def test_cli_import_stays_light():
    """`specml validate` runs in editors and hooks: no heavy ML stack may load on its path."""
    import subprocess

    code = (
        "import sys, specml.cli.main as m; from specml.compiler.api import validate_file; "
        f"validate_file({str(CHURN)!r}); "
        "heavy = [x for x in ('torch','kfp','feast','mlflow','evidently','pulumi','onnxruntime',"
        "'pandas','numpy') if x in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
