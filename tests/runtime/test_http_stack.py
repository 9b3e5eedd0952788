"""The HTTP stack under attack, over raw loopback sockets: smuggling and loose framing refused,
chunk and trailer floods bounded, a good request before a bad one answered, slowloris and idle
connections closed, the connection cap, Host and version rules, refusals and 500s counted in
/metrics, and never a traceback in an answer."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from specml.runtime.serving import ServerConfig, running_server
from specml.runtime.serving.testing import http_request, metric_samples, write_model_dir

pytest.importorskip("onnxruntime")

INFER = "/v2/models/churn/infer"
GOOD = json.dumps(
    {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 5], "data": [1, 2, 3, 4, 5]}]}
).encode()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model_dir(tmp_path_factory.mktemp("stack") / "current")


@pytest.fixture(scope="module")
def server(model_dir: Path):
    config = ServerConfig(
        model_dir,
        port=0,
        max_body_bytes=256 * 1024,
        idle_timeout_s=1.0,
        request_timeout_s=1.5,
        max_connections=64,
    )
    with running_server(config) as url:
        yield url


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", int(parts.port or 0)


def _exchange(url: str, payload: bytes, timeout: float = 10.0) -> bytes:
    """Send `payload`, read until the server closes (or `timeout`)."""
    with socket.create_connection(_address(url), timeout=timeout) as sock:
        sock.sendall(payload)
        return _read_all(sock)


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except (TimeoutError, ConnectionResetError):
        pass
    return b"".join(chunks)


def _post(body: bytes, extra: bytes = b"", host: bytes = b"Host: t\r\n") -> bytes:
    return (
        b"POST " + INFER.encode() + b" HTTP/1.1\r\n" + host + extra
        + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )  # fmt: skip


def _alive(url: str) -> None:
    status, _, raw = http_request(url, "POST", INFER, GOOD)
    assert status == 200, raw


def _refusals(url: str) -> dict[tuple[str, str], float]:
    text = http_request(url, "GET", "/metrics")[2].decode()
    return {
        (lab["code"], lab["reason"]): v
        for lab, v in metric_samples(text, "specml_http_refusals_total")
    }


def _status(answer: bytes) -> bytes:
    return answer.split(b"\r\n", 1)[0]


def test_smuggled_request_behind_two_content_lengths_is_never_answered(server: str) -> None:
    hidden = b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n\r\n"
    payload = (
        b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n"
        b"Content-Length: " + str(len(hidden)).encode() + b"\r\n\r\n" + hidden
    )
    answer = _exchange(server, payload)
    assert _status(answer) == b"HTTP/1.1 400 Bad Request"
    assert answer.count(b"HTTP/1.1") == 1 and b'"live"' not in answer
    _alive(server)


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: +5\r\n",
        b"Content-Length: 1_0\r\n",
        b"Content-Length: 5, 5\r\n",
        b"Transfer-Encoding: xchunked\r\n",
        b"Transfer-Encoding: chunked, gzip\r\n",
        b"Transfer-Encoding: gzip, chunked\r\n",
        b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        b"Transfer-Encoding: gzip\r\nContent-Length: 5\r\n",
    ],
)
def test_loose_framing_is_refused(server: str, framing: bytes) -> None:
    payload = b"POST /v2 HTTP/1.1\r\nHost: t\r\n" + framing + b"\r\n5\r\nhello\r\n0\r\n\r\n"
    answer = _exchange(server, payload)
    assert _status(answer) == b"HTTP/1.1 400 Bad Request", answer[:200]
    assert b'"error"' in answer and b"Traceback" not in answer


def test_hex_prefixed_chunk_size_is_refused(server: str) -> None:
    payload = b"POST /v2 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n"
    assert _status(_exchange(server, payload)) == b"HTTP/1.1 400 Bad Request"


@pytest.mark.parametrize(
    ("request_head", "status"),
    [
        (b"GET /v2/health/live HTTP/1.1\r\n\r\n", b"400"),  # no Host
        (b"GET /v2/health/live HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", b"400"),
        (b"GET /v2/health/live HTTP/1.7\r\nHost: t\r\n\r\n", b"400"),
        (b"GET /v2/health/live HTTP/2.0\r\nHost: t\r\n\r\n", b"505"),
        (b"GET /v2/health/live HTTP/1.1\nHost: t\n\n", b"400"),  # bare LF
    ],
)
def test_request_line_and_host_rules(server: str, request_head: bytes, status: bytes) -> None:
    answer = _exchange(server, request_head)
    assert answer.startswith(b"HTTP/1.1 " + status), answer[:200]


def test_absolute_form_and_http10_are_served(server: str) -> None:
    answer = _exchange(
        server, b"GET http://t/v2/health/live HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    assert _status(answer) == b"HTTP/1.1 200 OK" and b'"live":true' in answer
    answer = _exchange(server, b"GET /v2/health/live HTTP/1.0\r\n\r\n")
    assert _status(answer) == b"HTTP/1.1 200 OK"


def test_good_request_before_a_malformed_one_is_answered(server: str) -> None:
    answer = _exchange(server, _post(GOOD) + b"BROKEN\x01 / HTTP/1.1\r\n\r\n")
    statuses = re.findall(rb"HTTP/1\.1 \d{3}", answer)
    assert statuses == [b"HTTP/1.1 200", b"HTTP/1.1 400"], answer[:400]
    assert b'"outputs"' in answer


def test_chunk_flood_is_cut_off_and_other_clients_keep_being_answered(server: str) -> None:
    head = b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
    flood_done = threading.Event()
    answers: list[bytes] = []

    def flood() -> None:
        with socket.create_connection(_address(server), timeout=20) as sock:
            sock.sendall(head)
            try:
                for _ in range(200):  # up to 200 x 4096 one-byte chunks: past max_chunks
                    sock.sendall(b"1\r\nx\r\n" * 4096)
            except (BrokenPipeError, ConnectionResetError):
                pass
            answers.append(_read_all(sock))
        flood_done.set()

    thread = threading.Thread(target=flood, daemon=True)
    thread.start()
    served_during = 0
    while not flood_done.is_set() and served_during < 50:
        _alive(server)  # another client is answered while the flood runs
        served_during += 1
    thread.join(30)
    assert flood_done.is_set() and served_during > 0
    assert answers and _status(answers[0]) in (
        b"HTTP/1.1 400 Bad Request",
        b"HTTP/1.1 413 Content Too Large",
    )
    _alive(server)


def test_trailer_flood_closes_the_connection(server: str) -> None:
    head = b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
    with socket.create_connection(_address(server), timeout=20) as sock:
        sock.sendall(head + b"5\r\nhello\r\n0\r\n")
        sent = 0
        try:
            while sent < 64 * 1024 * 1024:  # far beyond the limit: the server must hang up
                sock.sendall(b"X-Trailer: " + b"a" * 1000 + b"\r\n")
                sent += 1013
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = _read_all(sock)
    assert sent < 64 * 1024 * 1024  # cut off long before
    assert answer == b"" or _status(answer) == b"HTTP/1.1 400 Bad Request"
    assert _refusals(server).get(("400", "trailer_flood"), 0) >= 1
    _alive(server)


def test_slowloris_is_closed_after_the_request_timeout(server: str) -> None:
    with socket.create_connection(_address(server), timeout=10) as sock:
        sock.sendall(b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: t\r\n")
        start = time.monotonic()
        closed = False
        while time.monotonic() - start < 8:
            try:
                sock.sendall(b"X-Slow: 1\r\n")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            sock.settimeout(0.2)
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            closed = True
            assert data == b"" or _status(data) == b"HTTP/1.1 408 Request Timeout"
            break
    assert closed and time.monotonic() - start < 8


def test_silent_connection_is_closed_after_the_idle_timeout(server: str) -> None:
    with socket.create_connection(_address(server), timeout=10) as sock:
        start = time.monotonic()
        assert sock.recv(1) == b""
        assert time.monotonic() - start < 8


def test_connection_cap_answers_503(model_dir: Path) -> None:
    config = ServerConfig(model_dir, port=0, max_connections=4)
    with running_server(config) as url:
        held = [socket.create_connection(_address(url), timeout=10) for _ in range(4)]
        try:
            time.sleep(0.2)
            answer = _exchange(url, b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n\r\n")
            assert _status(answer) == b"HTTP/1.1 503 Service Unavailable"
        finally:
            for sock in held:
                sock.close()
        time.sleep(0.2)
        _alive(url)
        assert _refusals(url).get(("503", "connection_limit"), 0) >= 1


def test_body_over_limit_is_refused_before_it_is_read(server: str) -> None:
    with socket.create_connection(_address(server), timeout=10) as sock:
        sock.sendall(b"POST /v2 HTTP/1.1\r\nHost: t\r\nContent-Length: 999999999\r\n\r\n")
        answer = _read_all(sock)
    assert _status(answer) == b"HTTP/1.1 413 Content Too Large"


def test_refusals_and_500s_are_counted_and_never_leak_a_traceback(server: str) -> None:
    before = _refusals(server)
    for _ in range(3):
        _exchange(server, b"GET / HTTP/1.1\r\n\r\n")
    after = _refusals(server)
    assert after[("400", "bad_host")] - before.get(("400", "bad_host"), 0) == 3
    status, _, raw = http_request(server, "POST", INFER, b"{" * 100000)
    assert status == 400 and b"Traceback" not in raw


def test_unhandled_error_is_a_counted_json_500(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from specml.runtime.serving.app import InferenceApp

    def broken(self: InferenceApp) -> None:
        raise RuntimeError("a bug with a secret path /etc/x")

    monkeypatch.setattr(InferenceApp, "_metadata", broken)
    with running_server(ServerConfig(model_dir, port=0)) as url:
        for _ in range(2):
            status, headers, raw = http_request(url, "GET", "/v2/models/churn")
            assert status == 500 and json.loads(raw) == {"error": "internal server error"}
            assert headers["content-type"] == "application/json"
        text = http_request(url, "GET", "/metrics")[2].decode()
        errors = {
            (lab["endpoint"], lab["code"]): v
            for lab, v in metric_samples(text, "specml_request_errors_total")
        }
        assert errors[("metadata", "500")] == 2
        _alive(url)


def test_two_workers_share_one_port_and_metrics_add_up_exactly(model_dir: Path) -> None:
    config = ServerConfig(model_dir, port=0, workers=2)
    with running_server(config, process=True) as url:
        for _ in range(40):  # new connections: the kernel spreads them over both workers
            _alive(url)
        _exchange(url, b"GET / HTTP/1.1\r\n\r\n")  # one refusal, counted in whichever worker
        text = http_request(url, "GET", "/metrics")[2].decode()
        answered = sum(
            v
            for lab, v in metric_samples(text, "specml_requests_total")
            if lab["endpoint"] == "infer" and lab["code"] == "200"
        )
        assert answered == 40
        refusals = {
            (lab["code"], lab["reason"]): v
            for lab, v in metric_samples(text, "specml_http_refusals_total")
        }
        assert refusals[("400", "bad_host")] == 1


def test_workers_stop_with_their_supervisor_even_when_it_is_killed(model_dir: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    from specml.runtime.serving.server import wait_until_ready

    command = [sys.executable, "-m", "specml.runtime.serving", str(model_dir), "--port", "0"]
    supervisor = subprocess.Popen(
        [*command, "--workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert supervisor.stdout is not None
        url = supervisor.stdout.readline().rsplit(" on ", 1)[1].strip()
        wait_until_ready(url, timeout_s=60)
        _alive(url)
        os.kill(supervisor.pid, signal.SIGKILL)
        supervisor.wait(10)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # the workers get SIGTERM from the kernel and drain
            try:
                socket.create_connection(_address(url), timeout=1).close()
            except OSError:
                break
            time.sleep(0.2)
        else:
            pytest.fail("workers kept serving after their supervisor was killed")
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()
