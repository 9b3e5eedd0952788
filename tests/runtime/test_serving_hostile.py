"""Hostile input: every malformed request gets a 4xx with a JSON error; the server stays up and
keeps answering correctly."""

from __future__ import annotations

import gzip
import json
import socket
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from specml.runtime.serving import ServerConfig, running_server
from specml.runtime.serving.testing import http_request, json_documents, write_model_dir

ort = pytest.importorskip("onnxruntime")

MAX_BODY = 64 * 1024
INFER = "/v2/models/churn/infer"
GOOD = {
    "inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 5], "data": [1, 2, 3, 4, 5]}]
}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model_dir(tmp_path_factory.mktemp("hostile") / "current")


@pytest.fixture(scope="module")
def server(model_dir: Path):
    with running_server(ServerConfig(model_dir, port=0, max_body_bytes=MAX_BODY)) as url:
        yield url


@pytest.fixture(scope="module")
def expected_good(model_dir: Path) -> list[float]:
    session = ort.InferenceSession(
        str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    x = np.asarray([[1, 2, 3, 4, 5]], dtype=np.float32)
    feed = {i.name: x[:, [j]] for j, i in enumerate(session.get_inputs())}
    return session.run(["output"], feed)[0].reshape(-1).tolist()


def _tensor(**overrides: object) -> str:
    tensor = {"name": "features", "datatype": "FP32", "shape": [1, 5], "data": [1, 2, 3, 4, 5]}
    tensor.update(overrides)
    return json.dumps({"inputs": [{k: v for k, v in tensor.items() if v is not ...}]})


def _assert_alive(url: str, expected_good: list[float]) -> None:
    status, _, raw = http_request(url, "POST", INFER, json.dumps(GOOD))
    assert status == 200
    assert json.loads(raw)["outputs"][0]["data"] == expected_good


# (method, path, body, extra headers, expected status, text the error must contain)
CASES = [
    ("POST", INFER, "{not json", {}, 400, "malformed JSON"),
    ("POST", INFER, "", {}, 400, "malformed JSON"),
    ("POST", INFER, "[1, 2]", {}, 400, "JSON object"),
    ("POST", INFER, "{}", {}, 400, "'inputs'"),
    ("POST", INFER, '{"inputs": []}', {}, 400, "'inputs'"),
    ("POST", INFER, '{"inputs": [5]}', {}, 400, "must be an object"),
    ("POST", INFER, _tensor(name="x"), {}, 400, "unknown input 'x'"),
    ("POST", INFER, _tensor(datatype="BYTES"), {}, 400, "not supported"),
    ("POST", INFER, _tensor(datatype=...), {}, 400, "datatype None"),
    ("POST", INFER, _tensor(shape=[1, 4], data=[1, 2, 3, 4]), {}, 400, "does not match"),
    ("POST", INFER, _tensor(shape=[5]), {}, 400, "does not match"),
    ("POST", INFER, _tensor(shape=[1, -5]), {}, 400, "non-negative"),
    ("POST", INFER, _tensor(shape="1x5"), {}, 400, "shape must be"),
    ("POST", INFER, _tensor(shape=[2, 5]), {}, 400, "has 5 elements but shape needs 10"),
    ("POST", INFER, _tensor(data=...), {}, 400, "missing 'data'"),
    ("POST", INFER, _tensor(data=["NaN", 1, 2, 3, 4]), {}, 400, "only numbers"),
    ("POST", INFER, _tensor(data=["a", "b", "c", "d", "e"]), {}, 400, "only numbers"),
    ("POST", INFER, _tensor(data=[True, False, True, False, True]), {}, 400, "only numbers"),
    ("POST", INFER, _tensor(data=[[1, 2], [3, 4, 5]]), {}, 400, "non-ragged"),
    ("POST", INFER, _tensor(data={"a": 1}), {}, 400, "list of numbers"),
    ("POST", INFER, _tensor(data=[1e39, 1, 2, 3, 4]), {}, 400, "infinite"),
    ("POST", INFER, _tensor(data=[10**40, 1, 2, 3, 4]), {}, 400, "only numbers"),
    ("POST", INFER, _tensor(datatype="INT64", data=[1.5, 2, 3, 4, 5]), {}, 400, "non-integers"),
    ("POST", INFER, _tensor().replace("1, 2", "Infinity, 2"), {}, 400, "non-finite"),
    ("POST", INFER, _tensor(parameters={"binary_data_size": 20}, data=...), {}, 400, "binary"),
    ("POST", INFER, _tensor(), {"Inference-Header-Content-Length": "9999"}, 400, "outside"),
    ("POST", INFER, _tensor(), {"Inference-Header-Content-Length": "x"}, 400, "integer"),
    ("POST", INFER, json.dumps({**GOOD, "outputs": [{"name": "nope"}]}), {}, 400, "unknown output"),
    ("POST", INFER, json.dumps({**GOOD, "id": 5}), {}, 400, "'id'"),
    ("POST", INFER, _tensor(), {"Content-Encoding": "br"}, 415, "not supported"),
    ("POST", INFER, "garbage", {"Content-Encoding": "gzip"}, 400, "decompress"),
    ("POST", "/v2/models/other/infer", json.dumps(GOOD), {}, 404, "unknown model 'other'"),
    ("POST", "/v2/models/churn/versions/9/infer", json.dumps(GOOD), {}, 404, "no version '9'"),
    ("GET", INFER, None, {}, 405, "use POST"),
    ("GET", "/nowhere", None, {}, 404, "no route"),
    ("POST", "/v1/models/churn/predict-by-entity", '{"entities": [{"customer_id": 1}]}', {}, 501,
     "no online feature store"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "body", "headers", "status", "text"), CASES)
def test_bad_request_gets_clear_4xx_and_server_survives(
    server: str, expected_good: list[float], method, path, body, headers, status, text
) -> None:
    got, resp_headers, raw = http_request(server, method, path, body, headers)
    assert got == status, raw
    assert resp_headers["content-type"] == "application/json"
    assert text in json.loads(raw)["error"]
    _assert_alive(server, expected_good)


def test_body_over_limit_is_413(server: str, expected_good: list[float]) -> None:
    huge = json.dumps({"inputs": [{"name": "features", "data": [0.0] * MAX_BODY}]})
    status, _, raw = http_request(server, "POST", INFER, huge)
    assert status == 413 and "limit" in json.loads(raw)["error"]
    bomb = gzip.compress(b" " * (MAX_BODY * 4))  # small on the wire, too big once inflated
    status, _, raw = http_request(server, "POST", INFER, bomb, {"Content-Encoding": "gzip"})
    assert status == 413
    _assert_alive(server, expected_good)


def test_gzip_body_and_nan_literal_are_accepted(server: str, expected_good: list[float]) -> None:
    status, _, raw = http_request(
        server,
        "POST",
        INFER,
        gzip.compress(json.dumps(GOOD).encode()),
        {"Content-Encoding": "gzip"},
    )
    assert status == 200 and json.loads(raw)["outputs"][0]["data"] == expected_good
    # a bare NaN literal means "missing": the model imputes it
    status, _, raw = http_request(server, "POST", INFER, _tensor().replace("[1, 2", "[NaN, 2"))
    assert status == 200 and len(json.loads(raw)["outputs"][0]["data"]) == 1  # P(positive)


def _raw_exchange(url: str, payload: bytes) -> bytes:
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(payload)
        chunks = []
        while chunk := sock.recv(65536):  # the server closes after a protocol error
            chunks.append(chunk)
        return b"".join(chunks)


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        (b"NOT HTTP AT ALL\r\n\r\n", b"400"),
        (b"POST /v2 HTTP/1.1\r\nContent-Length: -3\r\n\r\n", b"400"),
        (b"POST /v2 HTTP/1.1\r\nContent-Length: abc\r\n\r\n", b"400"),
        (b"GET /v2 HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n", b"431"),
        (b"POST /v2 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", b"400"),
    ],
)
def test_broken_http_is_answered_and_closed(
    server: str, expected_good: list[float], payload: bytes, status: bytes
) -> None:
    answer = _raw_exchange(server, payload)
    assert answer.startswith(b"HTTP/1.1 " + status), answer[:200]
    assert b'"error"' in answer
    _assert_alive(server, expected_good)


def test_chunked_and_pipelined_requests(server: str, expected_good: list[float]) -> None:
    body = json.dumps(GOOD).encode()
    chunked = b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in (body[:10], body[10:]))
    request = (
        b"POST "
        + INFER.encode()
        + b" HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunked
        + b"0\r\n\r\n"
    )
    closing = b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    answer = _raw_exchange(server, request + request + closing)
    assert answer.count(b"HTTP/1.1 200 OK") == 3
    assert answer.count(json.dumps(expected_good[0]).encode()) == 2


json_values = json_documents(max_leaves=30)
near_valid = st.fixed_dictionaries(
    {
        "inputs": st.lists(
            st.fixed_dictionaries(
                {
                    "name": st.sampled_from(["features", "x"]),
                    "datatype": st.sampled_from(["FP32", "FP64", "INT64", "BOOL", "x"]),
                    "shape": st.lists(st.integers(-2, 6), max_size=3),
                    "data": json_values,
                }
            ),
            max_size=2,
        )
    }
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.one_of(json_values, near_valid))
def test_random_json_never_breaks_the_server(server: str, document: object) -> None:
    status, headers, raw = http_request(server, "POST", INFER, json.dumps(document))
    if status == 200:  # random input can be valid by chance; then it must be a real answer
        assert json.loads(raw)["outputs"][0]["name"] == "output"
    else:
        assert status == 400, raw
        assert json.loads(raw)["error"]


def test_server_still_answers_after_the_storm(server: str, expected_good: list[float]) -> None:
    status, _, raw = http_request(server, "GET", "/metrics")
    assert status == 200 and b'code="400"' in raw
    _assert_alive(server, expected_good)
