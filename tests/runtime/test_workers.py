"""A multi-worker server survives a worker killed with SIGKILL: the supervisor starts another,
requests keep being answered meanwhile, and /metrics still counts every request exactly once
(the dead worker's counters kept, nothing counted twice). Loopback only; Linux /proc."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from specml.runtime.serving import ServerConfig, running_server
from specml.runtime.serving.testing import http_request, metric_samples, write_model_dir

pytest.importorskip("onnxruntime")
if not Path("/proc/self/task").is_dir():
    pytest.skip("finding worker processes needs Linux /proc", allow_module_level=True)

INFER = "/v2/models/churn/infer"
GOOD = json.dumps(
    {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 5], "data": [1, 2, 3, 4, 5]}]}
).encode()


def _children(pid: int) -> set[int]:
    """The live child processes of `pid` (every thread's children)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found.update(int(p) for p in (task / "children").read_text().split())
        except OSError:  # the thread ended meanwhile
            continue
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _workers(supervisor: int) -> set[int]:
    """Pids of the supervisor's spawned workers (not multiprocessing's resource tracker)."""
    return {pid for pid in _children(supervisor) if "multiprocessing.spawn" in _cmdline(pid)}


def _supervisor(model_dir: Path) -> int:
    (pid,) = [
        pid
        for pid in _children(os.getpid())
        if "specml.runtime.serving" in _cmdline(pid) and str(model_dir) in _cmdline(pid)
    ]
    return pid


def _answer(url: str) -> None:
    status, _, raw = http_request(url, "POST", INFER, GOOD)
    assert status == 200, raw


def _answered(url: str) -> float:
    text = http_request(url, "GET", "/metrics")[2].decode()
    return sum(
        v
        for lab, v in metric_samples(text, "specml_requests_total")
        if lab["endpoint"] == "infer" and lab["code"] == "200"
    )


def test_a_killed_worker_is_replaced_and_no_request_count_is_lost(tmp_path: Path) -> None:
    model_dir = write_model_dir(tmp_path / "current")
    with running_server(ServerConfig(model_dir, port=0, workers=2), process=True) as url:
        supervisor = _supervisor(model_dir)
        deadline = time.monotonic() + 60
        while len(before := _workers(supervisor)) < 2:  # both spawned workers visible in /proc
            assert time.monotonic() < deadline, f"workers: {before}"
            time.sleep(0.1)
        assert len(before) == 2
        for _ in range(30):  # new connections: the kernel spreads them over both workers
            _answer(url)
        victim = min(before)
        os.kill(victim, signal.SIGKILL)

        answered_after = 0
        deadline = time.monotonic() + 60
        while True:  # the survivor keeps answering while the supervisor replaces the victim
            _answer(url)
            answered_after += 1
            now = _workers(supervisor)
            replacements = now - before
            if victim not in now and replacements and len(now) == 2:
                break
            assert time.monotonic() < deadline, f"no new worker after the kill: {now}"
            time.sleep(0.05)
        (replacement,) = replacements
        assert replacement != victim

        assert _answered(url) == 30 + answered_after  # the victim's counts kept, none twice
        for _ in range(20):  # the replacement serves too and its counts add to the rest
            _answer(url)
        assert _answered(url) == 30 + answered_after + 20
