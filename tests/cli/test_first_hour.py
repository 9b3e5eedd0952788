"""A new user's first hour: machine-readable output, every problem at once at its line, hints
that make sense, starters that do not collide, and a CLI that writes only where it may."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from specml.cli.main import app
from specml.cli.output import Reporter
from specml.compiler.errors import Diagnostic
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[2]
SPECS = ROOT / "specs"
ANSI = re.compile(r"\x1b\[")


def specml(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The real CLI in a subprocess: stdout is what a CI job would parse."""
    return subprocess.run(
        [sys.executable, "-m", "specml.cli.main", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
    )


@pytest.fixture()
def churn(tmp_path: Path) -> Path:
    """The churn example in its own folder (a workdir of its own)."""
    spec = tmp_path / "churn.yaml"
    shutil.copy(SPECS / "churn.yaml", spec)
    return spec


def _commands(spec: Path, tmp: Path) -> list[list[str]]:
    return [
        ["validate", str(spec)],
        ["plan", str(spec)],
        ["plan", str(spec), "--target", "local"],
        ["compile", str(spec), "--target", "local", "-o", str(tmp / "out")],
        ["compile", str(spec), "--target", "local", "-o", str(tmp / "out"), "--check"],
        ["demo-data", str(spec), "--rows", "300"],
        ["runs", str(spec)],
        ["rollout", "status", str(spec)],
        ["monitor", str(spec)],  # no model yet: an error, still one JSON document
        ["init", "-o", str(tmp / "new.yaml")],
        ["init"],
        ["explain", "training.seed"],
        ["schema", "-o", str(tmp / "schemas")],
        ["docs", "-o", str(tmp / "reference.md")],
        ["targets"],
        ["version"],
    ]


def test_every_command_prints_one_json_document(churn: Path, tmp_path: Path) -> None:
    for args in _commands(churn, tmp_path):
        done = specml(*args, "--format", "json")
        assert done.returncode in (0, 3), (args, done.stderr[-2000:])
        try:
            json.loads(done.stdout)
        except ValueError:
            pytest.fail(f"specml {' '.join(args)} --format json: not JSON: {done.stdout[:500]!r}")
        assert not ANSI.search(done.stdout + done.stderr), args


def test_two_independent_mistakes_are_both_reported_at_their_lines(tmp_path: Path) -> None:
    lines = (SPECS / "churn.yaml").read_text().splitlines()
    seed = next(i for i, line in enumerate(lines) if line.strip().startswith("seed:"))
    lines.insert(seed + 1, "  colour: red")  # an unknown key
    text = "\n".join(lines).replace("min: {roc_auc:", "min: {roc_aucc:")  # a misspelt metric
    spec = tmp_path / "spec.yaml"
    spec.write_text(text + "\n")
    done = specml("validate", str(spec), "--format", "json")
    assert done.returncode == 1
    found = {d["path"]: d for d in json.loads(done.stdout)["diagnostics"]}
    assert found["training.colour"]["line"] == seed + 2
    metric = found["training.gates.min.roc_aucc"]
    assert (
        metric["line"]
        == text.splitlines().index(next(line for line in text.splitlines() if "roc_aucc" in line))
        + 1
    )
    assert "roc_auc" in metric["hint"]


def test_override_hints_make_sense(churn: Path) -> None:
    runner = CliRunner()
    out = runner.invoke(app, ["validate", str(churn), "training.model.type=linear"]).output
    assert "did you mean 'hidden'" not in out
    assert "is not a setting of type 'linear'" in out and "~training.model.hidden" in out
    out = runner.invoke(
        app, ["validate", str(churn), "training.features=[customer_stats:tenure_months]"]
    ).output
    assert "+training.features=" in out


def test_compile_check_after_a_one_field_edit_lists_only_changed_files(churn: Path) -> None:
    out = churn.parent / "compiled"
    assert specml("compile", str(churn), "--target", "local", "-o", str(out)).returncode == 0
    churn.write_text(churn.read_text().replace("critical: 0.2,", "critical: 0.25,", 1))
    done = specml(
        "compile", str(churn), "--target", "local", "-o", str(out), "--check", "-f", "json"
    )
    assert done.returncode == 1
    stale = sorted(d["message"].split(": ", 1)[1] for d in json.loads(done.stdout)["diagnostics"])
    assert stale == [".specml-plan.json (changed)", "plan.json (changed)"]


def test_init_names_its_system_and_workdir_after_the_file(tmp_path: Path) -> None:
    spec = tmp_path / "specs" / "my-churn.yaml"
    done = specml("init", "-o", str(spec))
    assert done.returncode == 0, done.stderr
    assert specml("validate", str(spec)).returncode == 0
    doc = yaml.safe_load(spec.read_text())
    assert doc["metadata"]["name"] == "my-churn"
    workdirs = {
        yaml.safe_load(p.read_text())["targets"]["local"]["workdir"] for p in SPECS.glob("*.yaml")
    }
    assert doc["targets"]["local"]["workdir"] not in workdirs


def test_demo_data_writes_only_inside_the_spec_folder_and_never_over_foreign_files(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    doc = yaml.safe_load((SPECS / "churn.yaml").read_text())
    for alert in doc["alerts"].values():  # YAML 1.1 reads the key `on` as True
        if True in alert:
            alert["on"] = alert.pop(True)
    outside = tmp_path / "elsewhere" / "customers.parquet"
    doc["data"]["sources"]["customers"]["path"] = str(outside)
    spec = folder / "spec.yaml"
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    done = specml("demo-data", str(spec), "--rows", "200", "-f", "json")
    assert done.returncode == 2 and not outside.exists()
    problem = json.loads(done.stdout)["diagnostics"][0]
    assert "outside" in problem["message"] and problem["line"] is not None
    assert "--allow-write" in problem["hint"]
    # named explicitly: written; again: it is ours, so it may be rewritten
    for _ in range(2):
        done = specml("demo-data", str(spec), "--rows", "200", "--allow-write", str(outside.parent))
        assert done.returncode == 0, done.stderr
    assert outside.is_file()
    # a file demo-data did not write is never overwritten
    usage = folder / doc["data"]["sources"]["usage"]["path"]
    usage.write_bytes(b"precious")
    done = specml("demo-data", str(spec), "--rows", "200", "--allow-write", str(outside.parent))
    assert done.returncode == 2 and usage.read_bytes() == b"precious"
    assert "was not written by" in done.stderr


def test_line_numbers_are_not_turned_into_emoji(capsys: pytest.CaptureFixture[str]) -> None:
    reporter = Reporter("human")
    reporter.diagnostics(
        [
            Diagnostic("bad", file="spec.yaml", line=100, col=3, path=("a",)),
            Diagnostic("worse", file="spec.yaml", line=1234, col=7, path=("b",)),
        ]
    )
    err = capsys.readouterr().err
    assert "spec.yaml:100:3:" in err and "spec.yaml:1234:7:" in err


def test_each_warning_is_printed_once(churn: Path, tmp_path: Path) -> None:
    done = specml("compile", str(churn), "--target", "kubeflow", "-o", str(tmp_path / "kf"))
    warnings = [line for line in done.stderr.splitlines() if ": warning: " in line]
    assert warnings and len(warnings) == len(set(warnings))
    assert "warning:" not in done.stdout  # not again among the compile's notes


@pytest.mark.parametrize("case", ["gpu_training_on_cpu_instance", "gpu_serving_on_cpu_instance"])
def test_sagemaker_gpu_rule_is_the_targets_at_the_spec_line(case: str, tmp_path: Path) -> None:
    spec = ROOT / "tests" / "specs" / "target_rules" / f"{case}.yaml"
    expected = json.loads(spec.with_suffix("").with_suffix(".expected.json").read_text())[0]
    assert specml("validate", str(spec)).returncode == 0  # a target rule, not a spec rule
    done = specml("compile", str(spec), "--target", "sagemaker", "-o", str(tmp_path), "-f", "json")
    assert done.returncode == 1
    found = [d for d in json.loads(done.stdout)["diagnostics"] if d["code"] == "gpu"]
    assert found and found[0]["path"] == expected["path"]
    assert (
        found[0]["line"] == expected["line"] and expected["message_fragment"] in found[0]["message"]
    )


def test_an_error_from_a_target_is_shown_at_the_spec_line(
    churn: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import typer
    from specml.cli.common import Command
    from specml.compiler.errors import TargetError

    cmd = Command("json")

    def body() -> int:
        cmd.load([str(churn)])
        where = ("training", "gates", "min", "roc_auc")
        raise TargetError([Diagnostic("gate failed", path=where, stage="target", code="gate")])

    with pytest.raises(typer.Exit) as done:
        cmd.run(body)
    assert done.value.exit_code == 3
    found = json.loads(capsys.readouterr().out)["diagnostics"][0]
    line = churn.read_text().splitlines()[found["line"] - 1]
    assert found["file"] == str(churn) and "roc_auc" in line


def test_rollout_run_shows_progress_while_a_step_holds(capsys: pytest.CaptureFixture[str]) -> None:
    from types import SimpleNamespace

    from specml.cli.common import Format
    from specml.cli.rollout import _Progress

    now = [0.0]
    progress = _Progress(Format.human, every_s=10.0)
    progress.clock = lambda: now[0]

    def decision(action: str, breaches: tuple[str, ...] = ()) -> SimpleNamespace:
        return SimpleNamespace(
            action=action,
            status="canary",
            step_index=1,
            traffic_percent=5.0,
            breaches=list(breaches),
            consecutive_failures=len(breaches),
        )

    for t in (0.0, 3.0, 6.0, 11.0, 12.0):  # holds: the first, then one per 10 s
        now[0] = t
        progress(decision("hold"))
    progress(decision("advance"))
    progress(decision("hold", ("p95_latency_ms 80 > 50",)))
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(":")[0] for line in lines] == ["hold", "hold", "advance", "hold"]
    assert "p95_latency_ms" in lines[-1] and "(1 in a row)" in lines[-1]
    quiet = _Progress(Format.json)
    quiet(decision("advance"))
    assert capsys.readouterr().err == ""


def test_a_damaged_demo_data_record_is_a_usage_error_at_its_file(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    assert CliRunner().invoke(app, ["init", "-o", str(spec)]).exit_code == 0
    workdir = yaml.safe_load(spec.read_text())["targets"]["local"]["workdir"]
    record = tmp_path / workdir / "demo_data.json"
    record.parent.mkdir(parents=True)
    record.write_text("{damaged")
    done = CliRunner().invoke(app, ["demo-data", str(spec), "-f", "json"])
    assert done.exit_code == 2, done.output
    problem = json.loads(done.stdout)["diagnostics"][0]
    assert problem["file"] == str(record) and "delete it" in problem["hint"]
