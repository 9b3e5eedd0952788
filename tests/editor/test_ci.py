"""CI integration: GitHub annotations, the JSON report, the pre-commit hooks and the documented workflow."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml
from specml.cli.main import app
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[2]
BAD = "tests/editor/fixtures/misspelt_and_wrong_type.yaml"
ANNOTATION = re.compile(
    r"^::(error|warning) file=([^,]+),line=(\d+),col=(\d+),title=specml \w+::(.+)$"
)


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout


def test_github_format_prints_one_annotation_per_problem(monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    code, out = _run("validate", BAD, "specs/churn.yaml", "--format", "github")
    assert code == 1
    annotations = [ANNOTATION.match(line) for line in out.splitlines() if line.startswith("::")]
    assert all(annotations), out
    found = {(m.group(2), int(m.group(3)), int(m.group(4))): m.group(5) for m in annotations if m}
    assert set(found) == {(BAD, 25, 5), (BAD, 26, 9)}
    assert "did you mean 'epochs'" in found[(BAD, 25, 5)]
    assert "number" in found[(BAD, 26, 9)]
    assert all(m.group(1) == "error" for m in annotations if m)


def test_json_format_is_one_document_with_the_diagnostics(monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    code, out = _run("validate", BAD, "specs/churn.yaml", "--format", "json")
    assert code == 1
    report = json.loads(out)
    assert report["ok"] is False and report["invalid"] == 1 and report["errors"] == 2
    by_path = {d["path"]: d for d in report["diagnostics"]}
    assert by_path["training.hyperparameters.epoch"]["line"] == 25
    assert by_path["training.hyperparameters.lr"]["line"] == 26
    assert all(d["file"] == BAD and d["severity"] == "error" for d in report["diagnostics"])


def test_valid_specs_give_exit_0_and_no_annotations(monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    code, out = _run("validate", "specs/churn.yaml", "specs/fraud.yaml", "--format", "github")
    assert code == 0
    assert "::error" not in out


def _hooks() -> dict[str, dict]:
    return {h["id"]: h for h in yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())}


def test_pre_commit_validate_hook_runs_the_real_command(monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    hook = _hooks()["specml-validate"]
    assert re.search(hook["files"], "specs/churn.yaml") and re.search(
        hook["exclude"], "specs/overlays/prod.yaml"
    )
    argv = shlex.split(hook["entry"])
    assert argv[0] == "specml"
    assert _run(*argv[1:], "specs/churn.yaml")[0] == 0
    assert _run(*argv[1:], BAD)[0] == 1


def test_pre_commit_compile_check_hook_is_the_check_mode() -> None:
    hook = _hooks()["specml-compile-check"]
    assert shlex.split(hook["entry"]) == ["specml", "compile", "--check"]
    assert hook["pass_filenames"] is False  # SPEC, --target and -o come from args


def _workflow() -> dict:
    text = (ROOT / "docs" / "ci.md").read_text()
    block = re.search(r"```yaml\n(# \.github/workflows/specml\.yml.*?)```", text, re.S)
    assert block, "docs/ci.md must hold the example workflow"
    return yaml.safe_load(block.group(1))


def test_documented_workflow_validates_compiles_and_checks_committed_output() -> None:
    workflow = _workflow()
    runs = "\n".join(
        step.get("run", "") for job in workflow["jobs"].values() for step in job["steps"]
    )
    assert "specml validate" in runs and "--format github" in runs
    assert "specml compile" in runs and "--check" in runs
    assert "specml schema --check" in runs
    for line in runs.splitlines():  # every specml command used there is a real one
        if line.strip().startswith("specml "):
            command = shlex.split(line)[1]
            assert command in {c.name or c.callback.__name__ for c in app.registered_commands}, line


STALE = re.compile(
    r"^::error file=([^,:]+),title=specml \w+::compiled output is out of date: (\S+) \((\w+)\) \(run `(.+)`"
)


def test_compile_check_reports_stale_output_as_annotations_and_json(
    tmp_path: Path, monkeypatch
) -> None:
    """The real kubeflow target: a clean tree passes; a changed, a missing and an extra file fail."""
    pytest.importorskip("kfp")
    monkeypatch.chdir(ROOT)
    out = tmp_path / "deploy"
    compile_ = ["compile", "specs/churn.yaml", "--target", "kubeflow", "-o", str(out)]
    assert _run(*compile_)[0] == 0
    code, text = _run(*compile_, "--check", "--format", "json")
    assert code == 0, text
    assert not [d for d in json.loads(text)["diagnostics"] if d["severity"] == "error"]

    (out / "pipeline.yaml").write_text((out / "pipeline.yaml").read_text() + "# edited by hand\n")
    (out / "prometheusrule.yaml").unlink()
    (out / "notes.txt").write_text("left over\n")
    code, text = _run(*compile_, "--check", "--format", "github")
    assert code == 1
    stale = {m.group(2): m for line in text.splitlines() if (m := STALE.match(line))}
    assert {name: m.group(3) for name, m in stale.items()} == {
        "pipeline.yaml": "changed",
        "prometheusrule.yaml": "missing",
        "notes.txt": "unexpected",
    }
    assert stale["pipeline.yaml"].group(1) == str(out / "pipeline.yaml")
    assert (
        stale["pipeline.yaml"].group(4)
        == f"specml compile specs/churn.yaml --target kubeflow -o {out}"
    )
    # what the target cannot express is a warning on the spec line that asked for it
    lines = (ROOT / "specs" / "churn.yaml").read_text().splitlines()
    warnings = [
        ANNOTATION.match(line) for line in text.splitlines() if line.startswith("::warning")
    ]
    assert warnings and all(warnings), text
    by_path = {m.group(5).split(":")[0]: m for m in warnings if m}
    rollout = by_path["rollout"]
    assert rollout.group(2) == "specs/churn.yaml" and lines[int(rollout.group(3)) - 1].startswith(
        "rollout:"
    )
    shadow = lines[int(by_path["rollout.steps[0]"].group(3)) - 1]
    assert "shadow:" in shadow

    code, text = _run(*compile_, "--check", "--format", "json")
    report = json.loads(text)
    assert code == 1
    errors = [d for d in report["diagnostics"] if d["severity"] == "error"]
    assert sorted((d["code"], d["file"]) for d in errors) == sorted(
        ("stale", str(out / name)) for name in ("pipeline.yaml", "prometheusrule.yaml", "notes.txt")
    )
