"""Rollout drills against a live local server (a real subprocess) under bounded loopback load.

- fault injection: a challenger with injected latency / errors is rolled back within
  interval x failure_limit + one loop; no client request fails; every request is answered by
  exactly one model (client counts per version == server counts per version == requests);
- crash drill: `specml rollout run` SIGKILLed mid-canary, restarted: it resumes at the same step
  with the held time kept, then promotes through every step (MLflow alias moved, serving/current
  published, the live server switches without a restart).
Time scale 0.01: interval 0.3 s. Runtimes (2 shared cores, load ~7): fault drills ~4 s each,
crash drill ~30 s + ~18 s fixture (MLflow's first import and schema creation).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from specml.compiler.api import plan_file
from specml.runtime.rollout.registry import REJECTED_TAG, MemoryRegistry
from specml.runtime.rollout.state import load_state
from specml.runtime.serving.loadgen import LoadGenerator
from specml.runtime.serving.server import ServerConfig, running_server
from specml.runtime.serving.testing import http_request, metric_samples, write_model_dir
from specml.targets.local.rollout import run_rollout, state_path

SCALE = 0.01
INTERVAL_S, FAILURE_LIMIT = 30, 3  # spec values; scaled: 0.3 s
FULL_STEPS = [
    {"shadow": "1m"},
    {"traffic": 20, "hold": "5m"},
    {"traffic": 50, "hold": "1m"},
    {"traffic": 100},
]
CANARY_FIRST = [{"traffic": 20, "hold": "5m"}, {"traffic": 100}]
ROOT = Path(__file__).resolve().parents[3]


def write_spec(folder: Path, steps: list[dict]) -> Path:  # type: ignore[type-arg]
    """The churn example with a short rollout, a 100 ms p95 SLO and workdir `wd`."""
    spec = yaml.safe_load((ROOT / "specs" / "churn.yaml").read_text())
    for key in ("alerts", "retraining"):
        spec.pop(key)
    spec["serving"]["slo"] = {"p95_latency_ms": 100, "error_rate": 0.05}
    spec["rollout"] = {
        "strategy": "canary",
        "steps": steps,
        "rollback_when": ["slo_breach"],
        "analysis": {"interval": f"{INTERVAL_S}s", "failure_limit": FAILURE_LIMIT},
    }
    spec["targets"] = {"local": {"workdir": "wd", "port": 18080}}
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    write_model_dir(folder / "wd" / "serving" / "current", model_version="1", seed=1)
    write_model_dir(folder / "wd" / "serving" / "challenger", model_version="2", seed=2)
    return path


def server_config(spec: Path, **faults: float) -> ServerConfig:
    wd = spec.parent / "wd"
    return ServerConfig(
        wd / "serving" / "current",
        port=0,
        challenger_dir=wd / "serving" / "challenger",
        rollout_state=wd / "rollout" / "state.json",
        state_poll_ms=20,
        **faults,
    )  # type: ignore[arg-type]


def ok_counts(url: str) -> Counter[str]:
    """Server-side answers per version (HTTP 200 on the infer endpoint)."""
    text = http_request(url, "GET", "/metrics")[2].decode()
    return Counter(
        {
            lab["version"]: int(v)
            for lab, v in metric_samples(text, "specml_requests_total")
            if lab["endpoint"] == "infer" and lab["code"] == "200"
        }
    )


def entered(history: list[dict], status: str, step: int | None = None) -> float:  # type: ignore[type-arg]
    return next(
        h["at"] for h in history if h["to"] == status and (step is None or h["step"] == step)
    )


def probe(url: str) -> str:
    """One inference; the version that answered."""
    one = {"inputs": [{"name": "features", "shape": [1, 5], "datatype": "FP32", "data": [0.0] * 5}]}
    raw = http_request(url, "POST", "/v2/models/churn/infer", json.dumps(one))[2]
    return str(json.loads(raw)["model_version"])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("steps", "fault"),
    [
        (CANARY_FIRST, {"inject_latency_ms": 150.0}),
        (CANARY_FIRST, {"inject_error_rate": 0.5}),
        (FULL_STEPS, {"inject_latency_ms": 150.0}),
    ],
    ids=["canary-latency", "canary-errors", "shadow-latency"],
)
def test_faulty_challenger_is_rolled_back_within_bound_under_load(
    tmp_path: Path,
    steps: list[dict],  # type: ignore[type-arg]
    fault: dict,  # type: ignore[type-arg]
) -> None:
    spec = write_spec(tmp_path, steps)
    plan = plan_file(spec)
    registry = MemoryRegistry({"champion": "1", "challenger": "2"})
    with running_server(server_config(spec, **fault), process=True) as url:
        with LoadGenerator(url, rate_per_s=200, concurrency=4) as load:
            time.sleep(0.3)
            state = run_rollout(
                plan, tmp_path, time_scale=SCALE, url=url, registry=registry, max_seconds=20
            )
            time.sleep(0.3)  # load keeps flowing across the switch back to the champion
            report = load.stop()
        server = ok_counts(url)
        time.sleep(0.1)
        after = Counter(probe(url) for _ in range(40))
    assert state.status == "rolled_back"
    metric = "p95_latency_ms" if "inject_latency_ms" in fault else "error_rate"
    assert f"3 failed analyses in a row: slo {metric}" in state.reason
    assert REJECTED_TAG in registry.tags["2"] and registry.aliases == {"champion": "1"}
    interval = INTERVAL_S * SCALE
    first_step = state.history[1]  # pending -> shadow | canary: the challenger gets traffic
    took = entered(state.history, "rolled_back") - first_step["at"]
    bound = interval * FAILURE_LIMIT + interval
    print(
        f"\nrollback after {took:.3f}s in {first_step['to']} (bound {bound:.3f}s); "
        f"clients: {dict(report.by_version)}, p99 {report.p(99):.1f} ms"
    )
    assert took <= bound, f"rolled back after {took:.3f}s, bound {bound:.3f}s"
    assert report.failed == 0, report.errors[:3]
    assert report.answered == report.sent == sum(report.by_version.values()) > 100
    assert server == report.by_version  # each request answered once, by the version the client saw
    if first_step["to"] == "shadow":
        assert set(report.by_version) == {"1"}  # shadow: users only ever got the champion
    elif "inject_latency_ms" in fault:
        assert report.by_version["2"] > 0  # the slow challenger answered users until rolled back
    assert after == {"1": 40}


def _wait_state(path: Path, predicate, timeout: float) -> object:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = load_state(path)
            if predicate(state):
                return state
        except Exception:  # not written yet
            pass
        time.sleep(0.01)
    raise AssertionError(
        f"rollout state never reached the expected condition; last: {path.read_text()}"
    )


@pytest.fixture(scope="module")
def mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry with churn v1 (champion) and v2 (challenger), built once and copied per test."""
    os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
    from mlflow.tracking import MlflowClient

    db = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    client = MlflowClient(tracking_uri=f"sqlite:///{db}", registry_uri=f"sqlite:///{db}")
    client.create_registered_model("churn")
    for version in ("1", "2"):
        client.create_model_version("churn", source=f"file:///models/churn/{version}")
    client.set_registered_model_alias("churn", "champion", "1")
    client.set_registered_model_alias("churn", "challenger", "2")
    return db


@pytest.mark.slow
def test_crash_drill_resumes_mid_canary_then_promotes_through_every_step(
    tmp_path: Path, mlflow_db: Path
) -> None:
    from mlflow.tracking import MlflowClient

    spec = write_spec(tmp_path, FULL_STEPS)
    wd = tmp_path / "wd"
    shutil.copy(mlflow_db, wd / "mlflow.db")
    path = state_path(plan_file(spec), tmp_path)
    env = {**os.environ, "FEAST_USAGE": "False", "MLFLOW_ENABLE_TELEMETRY": "false"}

    with running_server(server_config(spec), process=True) as url:
        command = [
            sys.executable,
            "-m",
            "specml.cli.main",
            "rollout",
            "run",
            str(spec),
            "--time-scale",
            str(SCALE),
            "--url",
            url,
        ]
        with LoadGenerator(url, rate_per_s=200, concurrency=4) as load:
            first = subprocess.Popen(
                command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
            try:
                killed_at = _wait_state(
                    path,
                    lambda s: s.status == "canary" and s.step_index == 1 and s.held_seconds > 0,
                    timeout=60,
                )
                first.send_signal(signal.SIGKILL)
            finally:
                first.wait(10)
            assert first.returncode == -signal.SIGKILL
            frozen = path.read_text()
            killed_at = load_state(path)  # what the killed controller last wrote
            assert (killed_at.status, killed_at.step_index) == ("canary", 1)
            before = ok_counts(url)["2"]
            time.sleep(0.5)
            assert path.read_text() == frozen  # nobody drives the rollout now...
            assert (
                ok_counts(url)["2"] > before
            )  # ...and the server still sends 20 % to the challenger
            second = subprocess.Popen(
                command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
            resumed = _wait_state(path, lambda s: s.updated_at != killed_at.updated_at, timeout=60)
            out, _ = second.communicate(timeout=120)
            report = load.stop()
        served = ok_counts(url)
        answered_by = probe(url)

    assert second.returncode == 0, out.decode()[-2000:]
    # resumed at the same step, with the healthy time already held kept
    assert (resumed.status, resumed.step_index, resumed.traffic_percent) == ("canary", 1, 20.0)
    assert resumed.held_seconds >= killed_at.held_seconds
    final = load_state(path)
    assert final.status == "promoted"
    assert [(h["to"], h["traffic_percent"]) for h in final.history] == [
        ("pending", 0.0),
        ("shadow", 0.0),
        ("canary", 20.0),
        ("canary", 50.0),
        ("canary", 100.0),
        ("promoted", 100.0),
    ]
    hold = 300 * SCALE
    step1 = entered(final.history, "canary", 2) - entered(final.history, "canary", 1)
    assert step1 >= hold  # the crash did not shorten the hold (it only lengthened wall time)
    client = MlflowClient(
        tracking_uri=f"sqlite:///{wd / 'mlflow.db'}", registry_uri=f"sqlite:///{wd / 'mlflow.db'}"
    )
    assert str(client.get_model_version_by_alias("churn", "champion").version) == "2"
    assert "challenger" not in client.get_registered_model("churn").aliases
    assert (
        json.loads((wd / "serving" / "current" / "serving.json").read_text())["model_version"]
        == "2"
    )
    assert answered_by == "2"  # the live server switched without a restart
    assert report.failed == 0 and report.answered == report.sent > 500
    assert served == report.by_version  # one answer per request, from the version the client saw
    print(
        f"\ncrash drill: killed at step 1 held {killed_at.held_seconds:.2f}s, resumed held "
        f"{resumed.held_seconds:.2f}s; step 1 wall {step1:.2f}s (hold {hold:.2f}s); clients {dict(report.by_version)}"
    )
