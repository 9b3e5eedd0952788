"""The compiled project end to end: `specml compile --target sagemaker -o DIR`, `--check`, and
DIR's own `__main__.py` + `plan.json` run under Pulumi mocks (not the in-repo module alone)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from sagemaker_testlib import (
    CONFIG,
    GOLDEN_SPECS,
    SPECS_DIR,
    STACK_ROLE,
    RecordingMocks,
    plan_for,
    run_project,
    run_spec,
)
from specml.cli.main import app
from specml.compiler.ir import Plan
from specml.targets.sagemaker.pipeline_definition import validate_definition
from typer.testing import CliRunner

ENDPOINT = "aws:sagemaker/endpoint:Endpoint"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
REPO = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent
runner = CliRunner()

# Equal 25% steps with equal 5-minute holds: what SageMaker expresses exactly as LINEAR routing.
LINEAR = (
    "rollout.steps=[{traffic:25,hold:5m},{traffic:50,hold:5m},{traffic:75,hold:5m},"
    "{traffic:100,hold:10m}]"
)


def compile_cli(spec: str, out: Path, *extra: str, check: bool = False) -> Any:
    """`specml compile specs/SPEC.yaml [overrides] --target sagemaker -o OUT [--check]`."""
    args = [
        "compile",
        str(SPECS_DIR / f"{spec}.yaml"),
        *extra,
        "--target",
        "sagemaker",
        "-o",
        str(out),
    ]
    return runner.invoke(app, [*args, "--check"] if check else args)


def tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def run_dir(spec: str, out: Path) -> tuple[RecordingMocks, dict[str, Any]]:
    config, secrets = CONFIG[spec]
    return run_project(out, config, secrets, stack_outputs={"executionRoleArn": STACK_ROLE})


def signature(mocks: RecordingMocks) -> list[tuple[str, str]]:
    return sorted((c.type, c.name) for c in mocks.created)


@pytest.mark.parametrize("spec", GOLDEN_SPECS)
def test_compile_then_check_is_clean_and_byte_identical(spec: str, tmp_path: Path) -> None:
    first = compile_cli(spec, tmp_path / "a")
    assert first.exit_code == 0, first.output
    assert compile_cli(spec, tmp_path / "b").exit_code == 0
    a, b = tree(tmp_path / "a"), tree(tmp_path / "b")
    assert {"Pulumi.yaml", "__main__.py", "plan.json", "pipeline_definition.json"} <= set(a)
    assert a == b
    assert validate_definition(json.loads(a["pipeline_definition.json"])) == []
    checked = compile_cli(spec, tmp_path / "a", check=True)
    assert checked.exit_code == 0, checked.output
    assert "up to date" in checked.output
    assert str(tmp_path) not in "".join(v.decode() for v in a.values())


def test_check_reports_edited_and_missing_files(tmp_path: Path) -> None:
    out = tmp_path / "fraud"
    assert compile_cli("fraud", out).exit_code == 0
    definition = out / "pipeline_definition.json"
    definition.write_text(definition.read_text().replace("GreaterThanOrEqualTo", "GreaterThan"))
    (out / "__main__.py").unlink()
    stale = compile_cli("fraud", out, check=True)
    assert stale.exit_code == 1
    assert "pipeline_definition.json (changed)" in stale.output
    assert "__main__.py (missing)" in stale.output
    assert compile_cli("fraud", out).exit_code == 0  # recompiling repairs it
    assert compile_cli("fraud", out, check=True).exit_code == 0


@pytest.mark.slow  # two fresh interpreters (~2-3 s each)
def test_compiled_bytes_do_not_depend_on_hash_seed(tmp_path: Path) -> None:
    """Two fresh interpreters with different PYTHONHASHSEED write the same bytes."""
    outs = []
    for seed in ("1", "2"):
        out = tmp_path / f"seed{seed}"
        env = {**os.environ, "PYTHONHASHSEED": seed}
        subprocess.run(
            [
                sys.executable,
                "-m",
                "specml.cli.main",
                "compile",
                str(SPECS_DIR / "fraud.yaml"),
                "--target",
                "sagemaker",
                "-o",
                str(out),
            ],
            check=True,
            env=env,
            cwd=REPO,
            capture_output=True,
            timeout=120,
        )
        outs.append(tree(out))
    assert {"Pulumi.yaml", "pipeline_definition.json", "plan.json"} <= set(outs[0])
    assert outs[0] == outs[1]


@pytest.mark.parametrize("spec", GOLDEN_SPECS)
def test_compiled_dir_runs_under_mocks_like_the_in_repo_program(spec: str, tmp_path: Path) -> None:
    assert compile_cli(spec, tmp_path).exit_code == 0
    from_dir, dir_outputs = run_dir(spec, tmp_path)
    in_repo, repo_outputs = run_spec(spec)
    assert signature(from_dir) == signature(in_repo)
    assert dir_outputs == repo_outputs
    assert dir_outputs["endpointName"] == plan_for(spec).endpoint.name
    assert dir_outputs["pipelineArn"].endswith(f"pipeline/{plan_for(spec).system.name}-training")
    assert from_dir.one(ENDPOINT).inputs == in_repo.one(ENDPOINT).inputs
    # The program uploads DIR's plan.json verbatim for the pipeline steps to read.
    obj = from_dir.one("aws:s3/bucketObjectv2:BucketObjectv2").inputs
    assert obj["content"] == (tmp_path / "plan.json").read_text()


def test_compiled_linear_rollout_reaches_the_endpoint(tmp_path: Path) -> None:
    """Equal rollout steps compile to LINEAR routing; DIR's plan.json, not the repo's, is used."""
    result = compile_cli(
        "churn", tmp_path, LINEAR, "serving.replicas.min=4", "serving.replicas.max=8"
    )
    assert result.exit_code == 0, result.output
    plan = Plan.from_json((tmp_path / "plan.json").read_text())
    assert plan.rollout is not None
    mocks, outputs = run_dir("churn", tmp_path)
    policy = mocks.one(ENDPOINT).inputs["deploymentConfig"]["blueGreenUpdatePolicy"]
    traffic = policy["trafficRoutingConfiguration"]
    assert traffic["type"] == "LINEAR"
    assert traffic["linearStepSize"] == {"type": "CAPACITY_PERCENT", "value": 25}
    assert "canarySize" not in traffic
    holds = {s.duration_seconds for s in plan.rollout.steps if s.traffic_percent < 100}
    assert holds == {300} and traffic["waitIntervalInSeconds"] == 300  # baking = the holds
    assert policy["terminationWaitInSeconds"] == 600  # the hold after 100%
    # 30 min provisioning allowance + 4 shifts x 5 min + 10 min termination wait.
    assert policy["maximumExecutionTimeoutInSeconds"] == 1800 + 4 * 300 + 600
    variant = mocks.one("aws:sagemaker/endpointConfiguration:EndpointConfiguration").inputs[
        "productionVariants"
    ][0]
    assert variant["initialInstanceCount"] == 4
    scaling = mocks.one("aws:appautoscaling/target:Target").inputs
    assert (scaling["minCapacity"], scaling["maxCapacity"]) == (4, 8)
    assert outputs["endpointName"] == "churn"
    # The repo's churn spec is a 5% canary: the program really read DIR's plan.json.
    repo_traffic = (
        run_spec("churn")[0]
        .one(ENDPOINT)
        .inputs["deploymentConfig"]["blueGreenUpdatePolicy"]["trafficRoutingConfiguration"]
    )
    assert repo_traffic["type"] == "CANARY"


@pytest.mark.slow  # a fresh interpreter importing pulumi (~5 s)
def test_compiled_dir_runs_in_a_fresh_interpreter(tmp_path: Path) -> None:
    """`python -c` in DIR (cwd=DIR, nothing of the test process) runs __main__.py under mocks."""
    assert compile_cli("demand", tmp_path).exit_code == 0
    script = (
        "import json, sys; from pathlib import Path\n"
        f"sys.path.insert(0, {str(HERE)!r})\n"
        "from sagemaker_testlib import run_project\n"
        "mocks, outputs = run_project(Path.cwd(), {'image': sys.argv[1]})\n"
        "print(json.dumps({'outputs': outputs, 'types': sorted({c.type for c in mocks.created}),"
        " 'alarms': sorted(c.inputs['name'] for c in mocks.of_type(sys.argv[2]))}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, CONFIG["demand"][0]["image"], ALARM],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["outputs"]["endpointName"] == "demand-forecast"
    assert report["outputs"]["bucketName"].startswith("demand-forecast")
    assert {
        "aws:sagemaker/endpoint:Endpoint",
        "aws:sagemaker/pipeline:Pipeline",
        "aws:sagemaker/featureGroup:FeatureGroup",
        "aws:iam/role:Role",
    } <= set(report["types"])
    assert report["alarms"] == [
        "demand-forecast-input-drift-critical",  # drift: the drift job's published figure
        "demand-forecast-input-drift-warn",
        "demand-forecast-slo-error-rate",
        "demand-forecast-slo-p95-latency",
    ]


def test_secret_config_keys_are_declared_secret(tmp_path: Path) -> None:
    """Pulumi.yaml marks secret keys `secret: true` (the CLI then rejects plaintext values);
    declarations use only the keys of Pulumi's project schema (configTypeDeclaration)."""
    assert compile_cli("fraud", tmp_path).exit_code == 0
    config = yaml.safe_load((tmp_path / "Pulumi.yaml").read_text())["config"]
    secret = {k for k, v in config.items() if v.get("secret")}
    assert secret == set(CONFIG["fraud"][1]) == {"kmsKeyArn", "alertWebhookUrl"}
    for key, decl in config.items():
        assert set(decl) <= {"type", "description", "default", "secret"}, key
        assert decl["type"] == "string"
        assert not (decl.get("secret") and "default" in decl), key
