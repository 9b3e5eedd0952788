"""`specml rollout status|promote|rollback|run`: output, state changes and diagnostics, and a
critical alert named in rollback_when rolling a live rollout back (~8 s in all)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from specml.cli.main import app
from specml.compiler.api import plan_file
from specml.runtime.rollout.controller import Controller
from specml.runtime.rollout.state import load_state
from specml.runtime.serving.testing import write_model_dir
from specml.targets.local.rollout import state_path
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture()
def spec(tmp_path: Path) -> Path:
    raw = yaml.safe_load((ROOT / "specs" / "churn.yaml").read_text())
    raw.pop("retraining")
    raw["alerts"] = {
        "feature_drift": {
            "metric": "psi",
            "on": "features",
            "warn": 0.1,
            "critical": 0.2,
            "action": "notify",
        }
    }
    raw["rollout"]["rollback_when"] = ["slo_breach", {"alert": "feature_drift"}]
    raw["targets"] = {"local": {"workdir": "wd", "port": 18080}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    write_model_dir(tmp_path / "wd" / "serving" / "current", model_version="1", seed=1)
    write_model_dir(tmp_path / "wd" / "serving" / "challenger", model_version="2", seed=2)
    return path


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def started(spec: Path) -> Path:
    plan = plan_file(spec)
    path = state_path(plan, spec.parent)
    Controller.start(plan, path, "2", "1", time_scale=0.01).begin()
    return path


def test_status_without_a_rollout_says_so_and_rollback_is_a_diagnostic(spec: Path) -> None:
    code, out = cli("rollout", "status", str(spec), "--format", "json")
    doc = json.loads(out)
    assert code == 0 and doc["rollout"] is None and not doc["diagnostics"]
    assert "no rollout" in doc["messages"][0]["message"]
    code, out = cli("rollout", "status", str(spec))
    assert code == 0 and "no rollout" in out
    code, out = cli("rollout", "rollback", str(spec), "--reason", "x", "--format", "json")
    doc = json.loads(out)
    assert code == 3 and doc["diagnostics"][0]["code"] == "no_rollout_in_progress"
    assert "specml rollout run" in doc["diagnostics"][0]["hint"]
    code, out = cli("rollout", "rollback", str(spec), "--reason", "x")
    assert code == 3 and "no rollout in progress" in out


def test_promote_without_a_rollout_promotes_the_published_challenger(spec: Path) -> None:
    code, out = cli("rollout", "promote", str(spec), "--format", "json")
    assert code == 0, out
    doc = json.loads(out)["rollout"]
    assert doc["status"] == "promoted" and doc["challenger_version"] == "2"


def test_run_without_a_challenger_says_how_to_get_one(spec: Path) -> None:
    (spec.parent / "wd" / "serving" / "challenger" / "serving.json").unlink()
    code, out = cli(
        "rollout", "run", str(spec), "--time-scale", "0.01", "--url", "http://127.0.0.1:1"
    )
    assert code == 3 and "no challenger to roll out" in out and "specml apply" in out


def test_status_shows_step_traffic_slo_and_history(spec: Path) -> None:
    started(spec)
    code, out = cli("rollout", "status", str(spec), "--format", "json")
    doc = json.loads(out)["rollout"]
    assert code == 0
    assert (doc["status"], doc["step"]["index"], doc["step"]["kind"]) == ("shadow", 0, "shadow")
    assert doc["traffic"] == {
        "challenger_percent": 0.0,
        "champion_percent": 100.0,
        "shadow_sample_percent": 100.0,
    }
    assert (
        doc["slo"]["p95_latency_ms"]["target"] == 50
        and doc["slo"]["p95_latency_ms"]["live"] is None
    )
    assert [h["to"] for h in doc["history"]] == ["pending", "shadow"]
    code, out = cli("rollout", "status", str(spec))
    assert (
        code == 0 and "step 1/4 (shadow)" in out and "traffic: challenger 0% / champion 100%" in out
    )


def test_rollback_needs_a_reason_and_rejects_the_challenger(spec: Path) -> None:
    path = started(spec)
    code, out = cli("rollout", "rollback", str(spec))
    assert code == 2 and "--reason" in out
    code, out = cli("rollout", "rollback", str(spec), "--reason", "p95 too high in the demo")
    state = load_state(path)
    assert code == 0 and (state.status, state.traffic_percent) == ("rolled_back", 0.0)
    assert state.reason == "p95 too high in the demo" and "rolled back" in out
    assert cli("rollout", "rollback", str(spec), "--reason", "again")[0] == 3  # nothing in progress


def test_promote_publishes_the_challenger_as_champion(spec: Path) -> None:
    path = started(spec)
    code, out = cli("rollout", "promote", str(spec), "--format", "json")
    assert code == 0 and json.loads(out)["rollout"]["status"] == "promoted"
    assert load_state(path).traffic_percent == 100.0
    current = spec.parent / "wd" / "serving" / "current" / "serving.json"
    assert json.loads(current.read_text())["model_version"] == "2"


def test_cli_import_stays_cheap() -> None:
    code = (
        "import sys, specml.cli.main; heavy = [m for m in ('specml.runtime.rollout.controller', "
        "'mlflow', 'onnxruntime', 'specml.targets.local.rollout') if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_critical_alert_named_in_rollback_when_rolls_back_a_live_rollout(spec: Path) -> None:
    import time

    from specml.runtime.rollout.registry import REJECTED_TAG, MemoryRegistry
    from specml.runtime.serving.server import running_server
    from specml.targets.local.rollout import run_rollout, start_rollout
    from specml.targets.local.serve import server_config

    plan = plan_file(spec)
    registry = MemoryRegistry({"champion": "1", "challenger": "2"})
    first = start_rollout(plan, spec.parent, "2", "1", time_scale=0.01, registry=registry)
    again = start_rollout(plan, spec.parent, "2", "1", time_scale=0.01, registry=registry)
    assert again.state.history == first.state.history  # idempotent: the same rollout goes on
    event = {
        "alert_id": "feature_drift",
        "level": "critical",
        "kind": "drift",
        "metric": "psi",
        "value": 0.4,
        "at": time.time(),
    }
    (spec.parent / "wd" / "alerts.jsonl").write_text(json.dumps(event) + "\n")
    with running_server(server_config(plan, spec.parent, port=0)) as url:
        state = run_rollout(plan, spec.parent, url=url, registry=registry, max_seconds=15)
    assert state.status == "rolled_back" and "alert feature_drift critical" in state.reason
    assert REJECTED_TAG in registry.tags["2"]
