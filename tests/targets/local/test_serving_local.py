"""`specml serve` for the local target: the Plan picks the model folder and batching policy, and
`serve()` runs a real server that answers and shuts down on SIGTERM."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from specml.compiler.api import plan_file
from specml.compiler.errors import TargetError
from specml.runtime.serving.testing import http_request, write_model_dir
from specml.targets.local.serve import model_dir_for, server_config

REPO = Path(__file__).resolve().parents[3]
SPEC = REPO / "specs" / "churn.yaml"


@pytest.fixture(scope="module")
def plan():
    return plan_file(str(SPEC))


def test_config_follows_the_plan(plan, tmp_path: Path) -> None:
    folder = write_model_dir(model_dir_for(plan, tmp_path))
    assert folder == tmp_path / ".specml" / "churn" / "serving" / "current"
    config = server_config(plan, tmp_path, port=0)
    assert config.model_dir == folder and config.port == 0
    assert config.host == plan.targets.local.host == "127.0.0.1"
    assert (config.batching, config.max_batch_size, config.max_delay_ms) == (True, 64, 2.0)
    other = write_model_dir(tmp_path / "elsewhere")
    assert server_config(plan, tmp_path, model_dir=other).model_dir == other


def test_missing_model_is_a_target_error_with_a_hint(plan, tmp_path: Path) -> None:
    with pytest.raises(TargetError) as info:
        server_config(plan, tmp_path)
    diag = info.value.diagnostics[0]
    assert diag.code == "no_model" and "model.onnx" in diag.message and "specml apply" in diag.hint


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_blocks_answers_and_stops_on_sigterm(plan, tmp_path: Path) -> None:
    write_model_dir(model_dir_for(plan, tmp_path))
    port = _free_port()
    code = (
        "from pathlib import Path; from specml.compiler.api import plan_file; "
        "from specml.targets.base import ServeOptions; "
        "from specml.targets.local.serve import serve; "
        f"serve(plan_file({str(SPEC)!r}), Path({str(tmp_path)!r}), ServeOptions(port={port}))"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                status = http_request(url, "GET", "/v2/health/ready", timeout=2)[0]
                if status != 503:  # 503: listening, still loading the model
                    break
                assert time.monotonic() < deadline
                time.sleep(0.1)
            except OSError:
                assert child.poll() is None, child.stderr.read()  # type: ignore[union-attr]
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert status == 200
        assert http_request(url, "GET", "/v2/models/churn")[0] == 200
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=20) == 0
    finally:
        if child.poll() is None:
            child.kill()
