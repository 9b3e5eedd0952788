"""kill -9 at every step of a promotion (and a rollback), then the normal command again: registry,
rollout state and serving/current converge to ONE champion, and a server started on the folder
serves it.

Each case copies one prepared workdir (a real MLflow sqlite registry with churn v1 champion and v2
challenger, both model folders published, a rollout in its shadow step), runs `specml rollout
promote|rollback` in a subprocess with SPECML_TEST_CRASH_AT=<point> (test-only fault injection in
targets/local/promotion.py: the process SIGKILLs itself there), checks the crash left the
half-done picture expected at that point, reruns a command in-process and checks convergence.
~2-8 s per case on 2 shared cores (the killed subprocess imports the CLI and MLflow); ~40 s in all.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from specml.cli.main import app
from specml.compiler.api import plan_file
from specml.runtime.rollout.controller import Controller
from specml.runtime.rollout.registry import PREVIOUS_CHAMPION_TAG, PROMOTED_TAG, REJECTED_TAG
from specml.runtime.rollout.state import load_state, save_state
from specml.runtime.serving.server import ServerConfig, running_server
from specml.runtime.serving.testing import http_request, write_model_dir
from specml.targets.local import publish
from specml.targets.local.promotion import CRASH_ENV, CRASH_POINTS
from specml.targets.local.publish import STAGING_PREFIX, swap_in
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[3]
ENV = {**os.environ, "FEAST_USAGE": "False", "MLFLOW_ENABLE_TELEMETRY": "false"}


@dataclass(frozen=True)
class Picture:
    """Where each of the three places stands: registry aliases, rollout state, served folder."""

    champion: str | None
    challenger: str | None
    state: str
    served: str | None
    journal: bool


def _client(wd: Path):  # type: ignore[no-untyped-def]
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{wd / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def picture(case: Path) -> Picture:
    """The three places as they are on disk now."""
    wd = case / "wd"
    aliases = {k: str(v) for k, v in _client(wd).get_registered_model("churn").aliases.items()}
    served = json.loads((wd / "serving" / "current" / "serving.json").read_text())
    return Picture(
        aliases.get("champion"),
        aliases.get("challenger"),
        load_state(wd / "rollout" / "state.json").status,
        str(served["model_version"]),
        (wd / "rollout" / "promotion.json").exists(),
    )


def served_version(case: Path) -> list[str]:
    """The versions a freshly started server on serving/current reports (GET model metadata)."""
    config = ServerConfig(case / "wd" / "serving" / "current", port=0)  # type: ignore[call-arg]
    with running_server(config) as url:
        status, _, body = http_request(url, "GET", "/v2/models/churn")
    assert status == 200, body
    return [str(v) for v in json.loads(body)["versions"]]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """spec.yaml + wd/: MLflow registry (v1 champion, v2 challenger), both folders, rollout begun."""
    os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
    folder = tmp_path_factory.mktemp("prepared")
    raw = yaml.safe_load((ROOT / "specs" / "churn.yaml").read_text())
    for key in ("alerts", "retraining"):
        raw.pop(key, None)
    raw["rollout"] = {
        "strategy": "canary",
        "steps": [{"shadow": "1m"}, {"traffic": 50, "hold": "1m"}, {"traffic": 100}],
        "rollback_when": ["slo_breach"],
        "analysis": {"interval": "30s", "failure_limit": 3},
    }
    raw["targets"] = {"local": {"workdir": "wd", "port": 18080}}
    spec = folder / "spec.yaml"
    spec.write_text(yaml.safe_dump(raw, sort_keys=False))
    wd = folder / "wd"
    write_model_dir(wd / "serving" / "current", model_version="1", seed=1)
    write_model_dir(wd / "serving" / "challenger", model_version="2", seed=2)
    client = _client(wd)
    client.create_registered_model("churn")
    for version in ("1", "2"):
        client.create_model_version("churn", source=f"file:///models/churn/{version}")
    client.set_registered_model_alias("churn", "champion", "1")
    client.set_registered_model_alias("churn", "challenger", "2")
    plan = plan_file(spec)
    Controller.start(plan, wd / "rollout" / "state.json", "2", "1", time_scale=0.01).begin()
    return folder


@pytest.fixture()
def case(prepared: Path, tmp_path: Path) -> Iterator[Path]:
    """A private copy of the prepared folder."""
    shutil.copytree(prepared, tmp_path / "case")
    yield tmp_path / "case"


def crash(case: Path, point: str, *command: str) -> None:
    """Run `specml <command> SPEC ...` in a subprocess that SIGKILLs itself at `point`."""
    argv = [command[0], command[1], str(case / "spec.yaml"), *command[2:]]
    env = {**ENV, CRASH_ENV: point}
    proc = subprocess.run(
        [sys.executable, "-m", "specml.cli.main", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, (
        proc.returncode,
        proc.stdout[-2000:],
        proc.stderr[-2000:],
    )


def cli(case: Path, *command: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    """Run `specml <command> SPEC ... --format json` in-process: exit code, JSON document."""
    argv = [command[0], command[1], str(case / "spec.yaml"), *command[2:], "--format", "json"]
    result = CliRunner().invoke(app, argv)
    return result.exit_code, json.loads(result.output)


PROMOTED = Picture("2", None, "promoted", "2", False)
ROLLED_BACK = Picture("1", None, "rolled_back", "1", False)
# what a kill at each point leaves behind before anything reruns
AFTER_PROMOTE_CRASH = {
    "promote:intent": Picture("1", "2", "shadow", "1", True),
    "promote:alias": Picture("2", None, "shadow", "1", True),
    "promote:staged": Picture("2", None, "shadow", "1", True),
    "promote:publish": Picture("2", None, "shadow", "2", True),
    "promote:state_before": Picture("2", None, "shadow", "2", True),
    "promote:state": Picture("2", None, "promoted", "2", True),
}
AFTER_ROLLBACK_CRASH = {
    "rollback:intent": Picture("1", "2", "shadow", "1", True),
    "rollback:state": Picture("1", "2", "rolled_back", "1", True),
    "rollback:reject": Picture("1", None, "rolled_back", "1", True),
}


def test_every_crash_point_is_exercised() -> None:
    assert set(CRASH_POINTS) == {*AFTER_PROMOTE_CRASH, *AFTER_ROLLBACK_CRASH}


@pytest.mark.parametrize("point", list(AFTER_PROMOTE_CRASH))
def test_promote_killed_at_each_step_converges_on_rerun(case: Path, point: str) -> None:
    crash(case, point, "rollout", "promote")
    assert picture(case) == AFTER_PROMOTE_CRASH[point]
    if point == "promote:staged":  # the complete copy was never swapped in
        assert list((case / "wd" / "serving").glob(f"{STAGING_PREFIX}*"))

    code, doc = cli(case, "rollout", "promote")

    assert code == 0 and doc["rollout"]["status"] == "promoted", doc
    assert picture(case) == PROMOTED
    state = load_state(case / "wd" / "rollout" / "state.json")
    assert (state.challenger_version, state.traffic_percent) == ("2", 100.0)
    assert [h["to"] for h in state.history].count("promoted") == 1
    tags = _client(case / "wd").get_model_version("churn", "2").tags
    assert tags[PROMOTED_TAG] == "promoted by hand" and tags[PREVIOUS_CHAMPION_TAG] == "1"
    assert served_version(case) == ["2"]


@pytest.mark.parametrize("point", list(AFTER_ROLLBACK_CRASH))
def test_rollback_killed_at_each_step_converges_on_rerun(case: Path, point: str) -> None:
    crash(case, point, "rollout", "rollback", "--reason", "drill")
    assert picture(case) == AFTER_ROLLBACK_CRASH[point]

    code, doc = cli(case, "rollout", "rollback", "--reason", "drill")

    assert code == 0 and doc["rollout"]["status"] == "rolled_back", doc
    assert picture(case) == ROLLED_BACK
    assert _client(case / "wd").get_model_version("churn", "2").tags[REJECTED_TAG] == "drill"
    assert load_state(case / "wd" / "rollout" / "state.json").reason == "drill"
    assert served_version(case) == ["1"]


@pytest.mark.parametrize(
    ("point", "rerun"),
    [
        ("promote:alias", ("rollout", "status")),
        (
            "promote:publish",
            ("rollout", "run", "--time-scale", "0.01", "--url", "http://127.0.0.1:1"),
        ),
        ("promote:intent", ("rollout", "rollback", "--reason", "too late")),
    ],
    ids=["status", "run", "rollback-after-promote"],
)
def test_any_rollout_command_completes_the_promotion_first(
    case: Path, point: str, rerun: tuple[str, ...]
) -> None:
    crash(case, point, "rollout", "promote")
    code, doc = cli(case, *rerun)
    assert picture(case) == PROMOTED  # a promotion is only ever rolled forward
    if rerun[1] == "rollback":
        assert code == 3 and doc["diagnostics"][0]["code"] == "no_rollout_in_progress"
    else:
        assert code == 0 and doc["rollout"]["status"] == "promoted", doc


def test_a_crash_during_the_recovery_still_converges(case: Path) -> None:
    crash(case, "promote:alias", "rollout", "promote")
    crash(case, "promote:staged", "rollout", "status")  # killed again, mid-publish, recovering
    assert picture(case) == AFTER_PROMOTE_CRASH["promote:staged"]
    code, _ = cli(case, "rollout", "status")
    assert code == 0 and picture(case) == PROMOTED


def test_the_unjournaled_d5_state_converges(case: Path) -> None:
    """The state a specml without the journal left (issue 15 D5): registry and state say v2,
    serving/current still v1, no journal. The rerun publishes v2."""
    wd = case / "wd"
    client = _client(wd)
    client.set_registered_model_alias("churn", "champion", "2")
    client.delete_registered_model_alias("churn", "challenger")
    state = load_state(wd / "rollout" / "state.json")
    state.status, state.traffic_percent = "promoted", 100.0
    save_state(state, wd / "rollout" / "state.json")
    assert picture(case) == Picture("2", None, "promoted", "1", False)

    code, doc = cli(case, "rollout", "promote")

    assert code == 0 and doc["rollout"]["status"] == "promoted"
    assert picture(case) == PROMOTED and served_version(case) == ["2"]


def test_serve_completes_the_promotion_before_it_loads_the_folder(case: Path) -> None:
    from specml.runtime.serving.background import wait_until_ready

    crash(case, "promote:alias", "rollout", "promote")
    server = subprocess.Popen(  # the announce line: stdout or stderr, whichever the CLI uses
        [sys.executable, "-m", "specml.cli.main", "serve", str(case / "spec.yaml"), "--port", "0"],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = _announced_url(server, timeout_s=120)
        assert url is not None, f"no server announced (exit {server.poll()})"
        wait_until_ready(url, alive=lambda: server.poll() is None)
        status, _, body = http_request(url, "GET", "/v2/models/churn")
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
    assert status == 200 and json.loads(body)["versions"] == ["2"]
    assert picture(case) == PROMOTED


def _announced_url(server: subprocess.Popen, timeout_s: float) -> str | None:  # type: ignore[type-arg]
    """The URL of the "specml serving ... on URL" stdout line, read with a deadline."""
    import queue
    import threading

    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert server.stdout is not None
        for line in server.stdout:
            lines.put(line)
        lines.put("")

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            return None
        if not line:
            return None
        if " on http://" in line:
            return line.rsplit(" on ", 1)[1].strip()
    return None


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_swap_in_puts_the_whole_new_folder_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exchange: bool
) -> None:
    if not exchange:  # the path taken where the OS has no atomic exchange
        monkeypatch.setattr(publish, "_exchange", lambda a, b: False)
    target, new = tmp_path / "current", tmp_path / ".promote-x" / "model"
    for folder, version in ((target, "1"), (new, "2")):
        folder.mkdir(parents=True)
        (folder / "serving.json").write_text(json.dumps({"model_version": version}))
    swap_in(new, target)
    assert publish.folder_version(target) == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".promote-x", "current"]
    assert publish.folder_version(new) == ("1" if exchange else None)  # the old one, to remove


def test_a_decision_taken_elsewhere_meanwhile_stands(case: Path) -> None:
    """A `rollout run` that resumed before `rollout promote` ran elsewhere, then rolls back on its
    next tick: the promotion stands (no rejected tag on the champion, no journal left)."""
    from specml.targets.local import promotion
    from specml.targets.local.rollout import registry_for

    plan = plan_file(case / "spec.yaml")
    stale = promotion.resume(plan, case, registry_for(plan, case))
    assert cli(case, "rollout", "promote")[0] == 0
    stale.rollback("a tick after the promotion")
    promotion.finish_pending(plan, case)
    assert picture(case) == PROMOTED
    assert REJECTED_TAG not in _client(case / "wd").get_model_version("churn", "2").tags


def test_apply_completes_the_promotion_before_anything_else(case: Path) -> None:
    """`specml apply` finishes the half-done promotion first (here it then stops: the prepared
    folder has no training data, which is all this test needs of it)."""
    crash(case, "promote:staged", "rollout", "promote")
    result = CliRunner().invoke(app, ["apply", str(case / "spec.yaml")])
    assert result.exit_code != 0  # no data here
    assert picture(case) == PROMOTED
