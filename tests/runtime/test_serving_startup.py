"""Startup: the server listens before it loads. /v2/health/live answers at once; ready, model
ready, /ping and predict-by-entity answer 503 until the model AND the online feature reader are
loaded; a load failure is reported, not hung on. Loads are held open with events (no sleeps)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from specml.runtime.serving import ServerConfig, running_server
from specml.runtime.serving import server as server_module
from specml.runtime.serving.model import ModelLoadError
from specml.runtime.serving.testing import (
    CHURN_FEATURES,
    http_request,
    make_feast_repo,
    write_model_dir,
)

os.environ.setdefault("FEAST_USAGE", "False")
pytest.importorskip("onnxruntime")

PREDICT = "/v1/models/churn/predict-by-entity"
INFER = {
    "inputs": [
        {"name": ref.split(":")[1], "datatype": "FP32", "shape": [1, 1], "data": [j + 1]}
        for j, ref in enumerate(CHURN_FEATURES)
    ]
}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("feast")
    return make_feast_repo(tmp_path_factory.mktemp("feast") / "repo", n_customers=20)


@pytest.fixture(scope="module")
def model_dir(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model_dir(tmp_path_factory.mktemp("model") / "current", feature_repo=repo)


def _held(monkeypatch: pytest.MonkeyPatch, name: str) -> tuple[threading.Event, threading.Event]:
    """Make server.<name> wait for `release`; `entered` is set once the load has begun."""
    entered, release = threading.Event(), threading.Event()
    real = getattr(server_module, name)

    def held(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        entered.set()
        assert release.wait(60), "test never released the load"
        return real(*args, **kwargs)

    monkeypatch.setattr(server_module, name, held)
    return entered, release


def _get(url: str, path: str) -> tuple[int, dict[str, str], bytes]:
    return http_request(url, "GET", path, timeout=5)


def _wait(predicate, timeout: float = 60.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_live_at_once_not_ready_until_model_and_reader_loaded(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_entered, model_release = _held(monkeypatch, "build_app")
    reader_entered, reader_release = _held(monkeypatch, "load_reader")
    config = ServerConfig(model_dir, port=0)
    with running_server(config, wait_ready=False) as url:
        assert model_entered.wait(30)
        # Phase 1: the model is loading. Live yes; everything that needs the model: 503.
        assert _get(url, "/v2/health/live")[0] == 200
        status, headers, body = _get(url, "/v2/health/ready")
        assert status == 503 and json.loads(body) == {"ready": False, "reason": "loading the model"}
        assert headers["retry-after"] == "1"
        assert _get(url, "/v2/models/churn/ready")[0] == 503
        assert _get(url, "/ping")[0] == 503
        assert _get(url, "/metrics")[0] == 200  # scrapers keep working
        status, _, body = http_request(url, "POST", "/v2/models/churn/infer", json.dumps(INFER))
        assert status == 503 and "starting (loading the model)" in json.loads(body)["error"]

        # Phase 2: the model is in, Feast is loading: infer works, readiness still waits.
        model_release.set()
        assert reader_entered.wait(30)
        _wait(
            lambda: http_request(url, "POST", "/v2/models/churn/infer", json.dumps(INFER))[0] == 200
        )
        assert _get(url, "/v2/health/ready")[0] == 503
        assert _get(url, "/v2/models/churn/ready")[0] == 503
        assert _get(url, "/ping")[0] == 503
        status, headers, body = http_request(
            url, "POST", PREDICT, '{"entities": [{"customer_id": 1}]}'
        )
        assert status == 503 and "still loading" in json.loads(body)["error"]
        assert headers["retry-after"] == "1"

        # Phase 3: both loaded.
        reader_release.set()
        _wait(lambda: _get(url, "/v2/health/ready")[0] == 200)
        assert _get(url, "/v2/models/churn/ready")[0] == 200 and _get(url, "/ping")[0] == 200
        status, _, body = http_request(url, "POST", PREDICT, '{"entities": [{"customer_id": 1}]}')
        assert status == 200 and json.loads(body)["found"] == [True]


def test_running_server_waits_for_readiness_by_default(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, release = _held(monkeypatch, "load_reader")
    threading.Timer(0.5, release.set).start()
    started = time.monotonic()
    with running_server(ServerConfig(model_dir, port=0)) as url:
        assert time.monotonic() - started >= 0.5  # it waited for the held reader
        assert _get(url, "/v2/health/ready")[0] == 200  # ready the moment it is handed out


def test_model_that_cannot_load_fails_the_start(tmp_path: Path) -> None:
    broken = write_model_dir(tmp_path / "broken")
    (broken / "model.onnx").write_bytes(b"not an onnx file")
    with (
        pytest.raises(ModelLoadError, match="the model failed to load"),
        running_server(ServerConfig(broken, port=0)),
    ):
        pass
    # checked before listening
    with (
        pytest.raises(ModelLoadError, match="no model.onnx"),
        running_server(ServerConfig(tmp_path / "nowhere", port=0)),
    ):
        pass


def test_server_process_exits_1_when_the_model_cannot_load(tmp_path: Path) -> None:
    """~2 s: the process listens, fails to load, says why and exits (never idles unready)."""
    broken = write_model_dir(tmp_path / "broken")
    (broken / "model.onnx").write_bytes(b"not an onnx file")
    done = subprocess.run(
        [sys.executable, "-m", "specml.runtime.serving", str(broken), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "error: cannot serve" in done.stderr and "the model failed to load" in done.stderr
    assert "Traceback" not in done.stderr
