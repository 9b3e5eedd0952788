"""The v2 inference server, driven by the real tritonclient.http client: one named input per
feature, round trips equal in-process ONNX Runtime, batching coalesces and maps results back
(class labels too), the single-matrix form still serves an all-numeric model, metrics exposed."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from specml.runtime.serving import ServerConfig, running_server
from specml.runtime.serving.server import wait_until_ready
from specml.runtime.serving.testing import (
    CHURN_FEATURES,
    http_request,
    metric_samples,
    write_model_dir,
)

tritonclient_http = pytest.importorskip("tritonclient.http")
ort = pytest.importorskip("onnxruntime")

N_FEATURES = 5
NAMES = [ref.split(":")[1] for ref in CHURN_FEATURES]
CLASSES = ["class_0", "class_1", "class_2"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model_dir(tmp_path_factory.mktemp("model") / "current", n_classes=3)


@pytest.fixture(scope="module")
def session(model_dir: Path):
    return ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def server(model_dir: Path):
    # a long max delay makes coalescing certain under concurrency in the batching test
    config = ServerConfig(model_dir, port=0, batching=True, max_batch_size=64, max_delay_ms=20)
    with running_server(config) as url:
        yield url


def _client(url: str, concurrency: int = 1):
    return tritonclient_http.InferenceServerClient(
        url.removeprefix("http://"), concurrency=concurrency
    )


def _inputs(x: np.ndarray, binary: bool = True) -> list:
    """One FP32 [N, 1] input per feature from the rows of x."""
    tensors = []
    for j, name in enumerate(NAMES):
        tensor = tritonclient_http.InferInput(name, [x.shape[0], 1], "FP32")
        tensor.set_data_from_numpy(np.ascontiguousarray(x[:, j : j + 1]), binary_data=binary)
        tensors.append(tensor)
    return tensors


def _feeds(x: np.ndarray) -> dict[str, np.ndarray]:
    return {name: np.ascontiguousarray(x[:, j : j + 1]) for j, name in enumerate(NAMES)}


def _rows(n: int, seed: int = 1) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, N_FEATURES)).astype(np.float32)
    x[0, 1] = np.nan  # missing value: imputed inside the model
    return x


def test_health_and_metadata_via_tritonclient(server: str) -> None:
    client = _client(server)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("churn") and client.is_model_ready("churn", "1")
    assert not client.is_model_ready("nope") and not client.is_model_ready("churn", "7")
    meta = client.get_model_metadata("churn")
    assert meta["name"] == "churn" and meta["versions"] == ["1"]
    # one input per feature, in the spec's order; the matrix form's columns documented
    assert meta["inputs"] == [{"name": n, "datatype": "FP32", "shape": [-1, 1]} for n in NAMES]
    assert meta["parameters"] == {"matrix_columns": NAMES}
    assert meta["outputs"] == [
        {
            "name": "output",
            "datatype": "FP32",
            "shape": [-1, 3],
            "parameters": {"classes": CLASSES},
        },
        {"name": "label", "datatype": "BYTES", "shape": [-1, 1]},
    ]
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]


@pytest.mark.parametrize("binary_in", [True, False])
@pytest.mark.parametrize("binary_out", [True, False])
def test_tritonclient_round_trip_equals_onnxruntime(
    server: str, session, binary_in: bool, binary_out: bool
) -> None:
    x = _rows(7)
    expected, labels = session.run(["output", "label"], _feeds(x))
    outputs = [
        tritonclient_http.InferRequestedOutput(name, binary_data=binary_out)
        for name in ("output", "label")
    ]
    result = _client(server).infer("churn", _inputs(x, binary_in), outputs=outputs)
    got = result.as_numpy("output")
    assert got.dtype == np.float32 and got.shape == (7, 3)
    np.testing.assert_array_equal(got, expected)  # exact: same session, same rows
    got_labels = [
        v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label").ravel()
    ]
    assert got_labels == labels.ravel().tolist() and set(got_labels) <= set(CLASSES)
    assert result.get_output("output")["parameters"]["classes"] == CLASSES


def test_versioned_infer_and_request_id(server: str, session) -> None:
    x = _rows(2, seed=5)
    result = _client(server).infer("churn", _inputs(x), model_version="1", request_id="abc")
    np.testing.assert_array_equal(result.as_numpy("output"), session.run(["output"], _feeds(x))[0])
    assert result.get_response()["id"] == "abc"
    with pytest.raises(tritonclient_http.InferenceServerException, match="no version '2'"):
        _client(server).infer("churn", _inputs(x), model_version="2")


@pytest.mark.parametrize("datatype", ["FP32", "FP64", "INT64"])
@pytest.mark.parametrize("nested", [True, False])
def test_plain_json_named_tensors(server: str, session, datatype: str, nested: bool) -> None:
    x = np.arange(2 * N_FEATURES, dtype=np.float64).reshape(2, N_FEATURES) * 0.5
    if datatype == "INT64":
        x = np.round(x)
    inputs = []
    for j, name in enumerate(NAMES):
        column = x[:, j].astype(int if datatype == "INT64" else float)
        data = [[v] for v in column.tolist()] if nested else column.tolist()
        inputs.append({"name": name, "datatype": datatype, "shape": [2, 1], "data": data})
    status, _, raw = http_request(
        server, "POST", "/v2/models/churn/infer", json.dumps({"inputs": inputs[::-1]})
    )  # inputs in any order: matched by name
    assert status == 200, raw
    output, label = json.loads(raw)["outputs"]
    assert output["name"] == "output" and output["shape"] == [2, 3]
    assert label == {
        "name": "label",
        "datatype": "BYTES",
        "shape": [2, 1],
        "data": session.run(["label"], _feeds(x.astype(np.float32)))[0].ravel().tolist(),
    }
    expected = session.run(["output"], _feeds(x.astype(np.float32)))[0]
    np.testing.assert_array_equal(
        np.asarray(output["data"], dtype=np.float32).reshape(2, 3), expected
    )


@pytest.mark.parametrize("datatype", ["FP32", "FP64", "INT64"])
@pytest.mark.parametrize("nested", [True, False])
def test_single_matrix_form_serves_an_all_numeric_model(
    server: str, session, datatype: str, nested: bool
) -> None:
    x = np.arange(2 * N_FEATURES, dtype=np.float64).reshape(2, N_FEATURES) * 0.5
    if datatype == "INT64":
        x = np.round(x)
    data = x.tolist() if nested else x.reshape(-1).tolist()
    if datatype == "INT64":
        data = np.asarray(data).astype(int).tolist()
    body = {
        "inputs": [
            {"name": "features", "datatype": datatype, "shape": [2, N_FEATURES], "data": data}
        ]
    }
    status, headers, raw = http_request(server, "POST", "/v2/models/churn/infer", json.dumps(body))
    assert status == 200, raw
    out = json.loads(raw)["outputs"][0]
    assert out["name"] == "output" and out["shape"] == [2, 3] and out["datatype"] == "FP32"
    expected = session.run(["output"], _feeds(x.astype(np.float32)))[0]
    np.testing.assert_array_equal(np.asarray(out["data"], dtype=np.float32).reshape(2, 3), expected)


def _batch_histogram(url: str) -> tuple[float, float]:
    """(count, sum) of the batch-size histogram."""
    text = http_request(url, "GET", "/metrics")[2].decode()
    count = sum(v for _, v in metric_samples(text, "specml_batch_size_rows_count"))
    total = sum(v for _, v in metric_samples(text, "specml_batch_size_rows_sum"))
    return count, total


def _concurrent_single_rows(url: str, n: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """n threads, one tritonclient each, fire one single-row request at the same moment."""
    # each request is one row whose values identify it, so a mix-up cannot go unnoticed
    rows = [np.full((1, N_FEATURES), i * 0.37 - 3.0, dtype=np.float32) for i in range(n)]
    answers: list[np.ndarray | None] = [None] * n
    start = threading.Barrier(n)

    def one(i: int) -> None:
        client = _client(url)
        start.wait()
        answers[i] = client.infer("churn", _inputs(rows[i])).as_numpy("output")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert all(a is not None for a in answers)
    return np.concatenate(rows), answers  # type: ignore[return-value]


def test_batching_coalesces_and_maps_results_back(server: str, session) -> None:
    count0, rows0 = _batch_histogram(server)
    n = 48
    rows, answers = _concurrent_single_rows(server, n)
    count1, rows1 = _batch_histogram(server)
    assert rows1 - rows0 == n  # every row went through a session.run once
    assert count1 - count0 < n  # ...in fewer runs than requests: coalesced (batch size > 1)
    for i, answer in enumerate(answers):
        own = session.run(["output"], _feeds(rows[i : i + 1]))[0]
        np.testing.assert_allclose(answer, own, rtol=1e-5, atol=1e-7)
    assert (
        len({tuple(np.round(a[0], 4)) for a in answers}) > n // 2
    )  # distinct rows, distinct answers


def test_batching_disabled_runs_each_request_alone(model_dir: Path, session) -> None:
    config = ServerConfig(model_dir, port=0, batching=False)
    with running_server(config) as url:
        rows, answers = _concurrent_single_rows(url, 16)
        count, total = _batch_histogram(url)
    assert count == total == 16  # 16 runs of one row each
    for i, answer in enumerate(answers):
        np.testing.assert_array_equal(answer, session.run(["output"], _feeds(rows[i : i + 1]))[0])


def test_metrics_exposed(server: str) -> None:
    _client(server).infer("churn", _inputs(_rows(1)))
    http_request(server, "POST", "/v2/models/churn/infer", b"{not json")
    status, headers, raw = http_request(server, "GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    text = raw.decode()
    ok = metric_samples(text, "specml_requests_total")
    assert any(lb["code"] == "200" and lb["endpoint"] == "infer" and v >= 1 for lb, v in ok)
    errors = metric_samples(text, "specml_request_errors_total")
    assert any(lb["code"] == "400" and lb["endpoint"] == "infer" and v >= 1 for lb, v in errors)
    latency = metric_samples(text, "specml_request_latency_seconds_bucket")
    assert {"model": "churn", "version": "1", "endpoint": "infer", "le": "0.001"} in [
        lb for lb, _ in latency
    ]
    info = metric_samples(text, "specml_model_info")
    assert info == [({"model": "churn", "version": "1", "provider": "CPUExecutionProvider"}, 1.0)]
    assert metric_samples(text, "specml_queue_delay_seconds_count")[0][1] >= 1


def test_server_process_shuts_down_gracefully_on_sigterm(model_dir: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-m", "specml.runtime.serving", str(model_dir), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = child.stdout.readline()  # type: ignore[union-attr]
        url = line.rsplit(" on ", 1)[1].strip()
        assert http_request(url, "GET", "/v2/health/live")[0] == 200  # listening: live at once
        wait_until_ready(url, timeout_s=60, alive=lambda: child.poll() is None)
        assert http_request(url, "GET", "/v2/health/ready")[0] == 200
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=20) == 0
        assert "shutting down" in child.stderr.read()  # type: ignore[union-attr]
    finally:
        if child.poll() is None:
            child.kill()
