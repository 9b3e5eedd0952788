"""The server side of rollouts: routing by the state file, shadow mirroring, per-version metrics,
fault injection on the challenger only. Server in a thread, tiny ONNX models (~6 s in all)."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest
from specml.compiler.api import plan_file
from specml.runtime.rollout.state import RolloutState, save_state
from specml.runtime.serving.loadgen import LoadGenerator
from specml.runtime.serving.roles import FaultInjection
from specml.runtime.serving.server import ServerConfig, running_server
from specml.runtime.serving.testing import (
    CHURN_FEATURES,
    http_request,
    metric_samples,
    write_model_dir,
)


@pytest.fixture(scope="module")
def plan():  # type: ignore[no-untyped-def]
    return plan_file("specs/churn.yaml")


@pytest.fixture()
def dirs(tmp_path: Path) -> dict[str, Path]:
    return {
        "current": write_model_dir(tmp_path / "serving" / "current", model_version="1", seed=1),
        "challenger": write_model_dir(
            tmp_path / "serving" / "challenger", model_version="2", seed=2
        ),
        "state": tmp_path / "rollout" / "state.json",
    }


def _state(
    plan, status: str, traffic: float = 0.0, shadow: float = 0.0, version: str = "2"
) -> RolloutState:  # type: ignore[no-untyped-def]
    return RolloutState(
        model="churn", challenger_version=version, champion_version="1",
        rollout=plan.rollout.model_dump(mode="json"), slo=plan.endpoint.slo.model_dump(mode="json"),
        status=status, step_index=1, traffic_percent=traffic, shadow_sample_percent=shadow,
        updated_at=time.time(),
    )  # fmt: skip


def _config(dirs: dict[str, Path], **kw) -> ServerConfig:  # type: ignore[no-untyped-def]
    return ServerConfig(
        dirs["current"],
        port=0,
        challenger_dir=dirs["challenger"],
        rollout_state=dirs["state"],
        state_poll_ms=10,
        **kw,
    )


def _infer(
    url: str, request_id: str, path: str = "/v2/models/churn/infer"
) -> tuple[str, dict[str, str]]:
    body = {
        "id": request_id,
        "inputs": [
            {
                "name": ref.split(":")[1],
                "shape": [1, 1],
                "datatype": "FP32",
                "data": [0.1 * (j + 1)],
            }
            for j, ref in enumerate(CHURN_FEATURES)
        ],
    }
    status, headers, raw = http_request(url, "POST", path, json.dumps(body))
    assert status == 200, raw
    doc = json.loads(raw)
    assert headers["x-specml-model-version"] == doc["model_version"]
    return doc["model_version"], headers


def _wait_for(predicate, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def _ok_counts(url: str) -> Counter[str]:
    text = http_request(url, "GET", "/metrics")[2].decode()
    counts: Counter[str] = Counter()
    for labels, value in metric_samples(text, "specml_requests_total"):
        if labels["endpoint"] == "infer" and labels["code"] == "200":
            counts[labels["version"]] += int(value)
    return counts


def test_no_state_means_champion_only_and_pinned_versions_work(plan, dirs) -> None:  # type: ignore[no-untyped-def]
    with running_server(_config(dirs)) as url:
        assert {_infer(url, f"r{i}")[0] for i in range(20)} == {"1"}
        meta = json.loads(http_request(url, "GET", "/v2/models/churn")[2])
        assert meta["versions"] == ["1"]  # no state: the challenger is not even loaded
        save_state(_state(plan, "canary", traffic=0.0), dirs["state"])
        _wait_for(
            lambda: (
                json.loads(http_request(url, "GET", "/v2/models/churn")[2])["versions"]
                == ["1", "2"]
            )
        )
        assert _infer(url, "x", "/v2/models/churn/versions/2/infer")[0] == "2"
        status, _, raw = http_request(url, "GET", "/v2/models/churn/versions/9")
        assert status == 404 and b"no version '9'" in raw


def test_canary_split_follows_the_state_file_and_every_answer_is_counted_once(plan, dirs) -> None:  # type: ignore[no-untyped-def]
    save_state(_state(plan, "canary", traffic=30.0), dirs["state"])
    with running_server(_config(dirs)) as url:
        first = {f"req-{i}": _infer(url, f"req-{i}")[0] for i in range(300)}
        seen = Counter(first.values())
        to_challenger = next(k for k, v in first.items() if v == "2")
        assert 60 <= seen["2"] <= 120 and seen["1"] + seen["2"] == 300  # 30 % +- noise
        again = Counter(_infer(url, f"req-{i}")[0] for i in range(300))
        assert again == seen  # the same request id always goes to the same model
        assert _ok_counts(url) == seen + again  # server-side: one answer per request, per version
        save_state(_state(plan, "rolled_back", traffic=0.0), dirs["state"])
        _wait_for(lambda: _infer(url, to_challenger)[0] == "1")
        assert {_infer(url, f"req-{i}")[0] for i in range(100)} == {"1"}
        roles = metric_samples(
            http_request(url, "GET", "/metrics")[2].decode(), "specml_model_role"
        )
        assert sorted((lab["version"], lab["role"]) for lab, _ in roles) == [
            ("1", "champion"),
            ("2", "challenger"),
        ]


def test_shadow_mirrors_to_the_challenger_but_users_get_the_champion(plan, dirs) -> None:  # type: ignore[no-untyped-def]
    save_state(_state(plan, "shadow", shadow=100.0), dirs["state"])
    with running_server(_config(dirs)) as url:
        assert {_infer(url, f"s{i}")[0] for i in range(50)} == {"1"}

        def compared() -> float:
            text = http_request(url, "GET", "/metrics")[2].decode()
            return sum(
                v
                for lab, v in metric_samples(text, "specml_shadow_requests_total")
                if lab["outcome"] == "compared"
            )

        _wait_for(lambda: compared() == 50)
        text = http_request(url, "GET", "/metrics")[2].decode()
        shadow = [
            (lab, v)
            for lab, v in metric_samples(text, "specml_requests_total")
            if lab["endpoint"] == "shadow"
        ]
        assert shadow == [
            ({"model": "churn", "version": "2", "endpoint": "shadow", "code": "200"}, 50.0)
        ]
        diffs = metric_samples(text, "specml_shadow_prediction_abs_diff_count")
        assert diffs and diffs[0][1] == 50  # different weights: predictions compared, latency too
        rows = {lab["agree"]: v for lab, v in metric_samples(text, "specml_shadow_rows_total")}
        assert rows.get("true", 0) + rows.get("false", 0) == 50


def test_promoted_state_makes_the_challenger_the_champion_without_a_restart(plan, dirs) -> None:  # type: ignore[no-untyped-def]
    save_state(_state(plan, "canary", traffic=50.0), dirs["state"])
    with (
        running_server(_config(dirs)) as url,
        LoadGenerator(url, rate_per_s=300, concurrency=4) as load,
    ):
        time.sleep(0.3)
        save_state(_state(plan, "promoted", traffic=100.0), dirs["state"])
        _wait_for(
            lambda: (
                _infer(url, "p")[1]["x-specml-model-role"] == "champion"
                and _infer(url, "p")[0] == "2"
            )
        )
        time.sleep(0.2)
        report = load.stop()
        assert report.failed == 0 and report.answered == report.sent > 50
        assert set(report.by_version) == {"1", "2"}
        assert {_infer(url, f"q{i}")[0] for i in range(30)} == {"2"}
        text = http_request(url, "GET", "/metrics")[2].decode()
        roles = {
            lab["version"]: lab["role"] for lab, _ in metric_samples(text, "specml_model_role")
        }
        assert roles == {"2": "champion"}
        # the old champion's info series is gone too: dashboards see one served version
        info = {lab["version"] for lab, _ in metric_samples(text, "specml_model_info")}
        assert info == {"2"}


def test_fault_injection_hits_only_the_challenger_and_users_never_see_it(plan, dirs) -> None:  # type: ignore[no-untyped-def]
    assert FaultInjection.from_env({}).active is False  # off by default
    assert FaultInjection.from_env({"SPECML_INJECT_ERROR_RATE": "0.5"}).error_rate == 0.5
    save_state(_state(plan, "canary", traffic=50.0), dirs["state"])
    with running_server(_config(dirs, inject_error_rate=1.0, inject_seed=0)) as url:
        answers = Counter(_infer(url, f"f{i}")[0] for i in range(60))
        assert answers == {"1": 60}  # every challenger pick failed over to the champion
        text = http_request(url, "GET", "/metrics")[2].decode()
        errors = {
            (lab["version"], lab["code"]): v
            for lab, v in metric_samples(text, "specml_request_errors_total")
        }
        assert 15 <= errors[("2", "500")] <= 45 and ("1", "500") not in errors
    with running_server(_config(dirs, inject_latency_ms=60)) as url:
        start = time.perf_counter()
        version, _ = _infer(url, "slow-one", "/v2/models/churn/versions/2/infer")
        pinned = time.perf_counter() - start
        start = time.perf_counter()
        _infer(url, "fast-one", "/v2/models/churn/versions/1/infer")
        assert pinned >= 0.06 > time.perf_counter() - start


def test_server_cli_flags_document_fault_injection() -> None:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "specml.runtime.serving", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert (
        "--inject-latency-ms" in out and "--inject-error-rate" in out and "--rollout-state" in out
    )


def test_request_log_records_each_answer_with_the_version_that_gave_it(
    plan, dirs, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    from specml.runtime.monitor.requestlog import read_requests

    save_state(_state(plan, "canary", traffic=50.0), dirs["state"])
    log_dir = tmp_path / "monitor" / "requests"
    with running_server(_config(dirs, request_log_dir=log_dir)) as url:
        answered = Counter(_infer(url, f"log-{i}")[0] for i in range(40))
    logged = read_requests(log_dir)  # the server flushed the log at shutdown
    assert len(logged) == 40 and Counter(logged["model_version"]) == answered
    assert sorted(logged["request_id"]) == sorted(f"log-{i}" for i in range(40))


def test_a_corrupt_state_file_keeps_everything_on_the_champion(plan, dirs) -> None:  # type: ignore[no-untyped-def]
    dirs["state"].parent.mkdir(parents=True)
    dirs["state"].write_text("{not json")
    with running_server(_config(dirs)) as url:
        assert {_infer(url, f"c{i}")[0] for i in range(30)} == {"1"}
        save_state(_state(plan, "canary", traffic=100.0), dirs["state"])
        _wait_for(lambda: _infer(url, "c0")[0] == "2")
