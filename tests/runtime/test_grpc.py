"""The Open Inference Protocol's gRPC service, driven by the real tritonclient.grpc client: health
and metadata, infer equal to REST infer (FP32, INT64 and BYTES inputs), refusals as gRPC statuses
naming the input, and gRPC requests counted in /metrics like REST ones."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
from specml.runtime.serving import ServerConfig, running_server
from specml.runtime.serving.testing import (
    http_request,
    metric_samples,
    mixed_request_rows,
    write_mixed_model_dir,
    write_model_dir,
)

grpcclient = pytest.importorskip("tritonclient.grpc")
pytest.importorskip("onnxruntime")
from tritonclient.utils import InferenceServerException  # noqa: E402


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def mixed_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mixed_model_dir(tmp_path_factory.mktemp("grpc") / "current")


@pytest.fixture(scope="module")
def served(mixed_dir: Path):
    port = _free_port()
    with running_server(ServerConfig(mixed_dir, port=0, grpc_port=port)) as url:
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        yield url, client
        client.close()


def _grpc_inputs(rows: dict[str, np.ndarray]) -> list:
    tensors = []
    for name, column in rows.items():
        datatype = "BYTES" if column.dtype == object else "FP32"
        tensor = grpcclient.InferInput(name, list(column.shape), datatype)
        tensor.set_data_from_numpy(column)
        tensors.append(tensor)
    return tensors


def _rest_infer(url: str, rows: dict[str, np.ndarray]) -> dict:  # type: ignore[type-arg]
    inputs = []
    for name, column in rows.items():
        if column.dtype == object:
            inputs.append({"name": name, "datatype": "BYTES", "shape": list(column.shape),
                           "data": [str(v) for v in column.reshape(-1)]})  # fmt: skip
        else:
            data = [None if np.isnan(v) else float(v) for v in column.reshape(-1)]
            inputs.append({"name": name, "datatype": "FP32", "shape": list(column.shape),
                           "data": data})  # fmt: skip
    status, _, raw = http_request(
        url, "POST", "/v2/models/mixed/infer", json.dumps({"inputs": inputs})
    )
    assert status == 200, raw
    return {o["name"]: o for o in json.loads(raw)["outputs"]}


def test_health_and_metadata(served) -> None:  # type: ignore[no-untyped-def]
    url, client = served
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("mixed")
    server_meta = client.get_server_metadata(as_json=True)
    assert server_meta["name"] == "specml"
    meta = client.get_model_metadata("mixed", as_json=True)
    rest = json.loads(http_request(url, "GET", "/v2/models/mixed")[2])
    assert [i["name"] for i in meta["inputs"]] == [i["name"] for i in rest["inputs"]]
    assert {i["datatype"] for i in meta["inputs"]} == {"FP32", "BYTES"}


def test_grpc_infer_equals_rest_infer(served) -> None:  # type: ignore[no-untyped-def]
    url, client = served
    rows = mixed_request_rows(16, seed=3)
    result = client.infer("mixed", _grpc_inputs(rows))
    rest = _rest_infer(url, rows)
    np.testing.assert_allclose(
        result.as_numpy("output").reshape(-1), np.asarray(rest["output"]["data"]).reshape(-1),
        rtol=1e-6,
    )  # fmt: skip
    labels = [v.decode() for v in result.as_numpy("label").reshape(-1)]
    assert labels == rest["label"]["data"]
    assert result.get_response().model_version == "1"


def test_int64_input_round_trip(tmp_path: Path) -> None:
    model_dir = write_model_dir(
        tmp_path / "current",
        features=("t:region", "t:spend"),
        categorical={"region": (10, 20, 30)},
    )
    port = _free_port()
    with running_server(ServerConfig(model_dir, port=0, grpc_port=port)) as url:
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        region = grpcclient.InferInput("region", [3, 1], "INT64")
        region.set_data_from_numpy(np.array([[10], [30], [99]], dtype=np.int64))
        spend = grpcclient.InferInput("spend", [3, 1], "FP32")
        spend.set_data_from_numpy(np.array([[1.5], [2.5], [-1.0]], dtype=np.float32))
        got = client.infer("churn", [region, spend]).as_numpy("output").reshape(-1)
        body = {"inputs": [
            {"name": "region", "datatype": "INT64", "shape": [3, 1], "data": [10, 30, 99]},
            {"name": "spend", "datatype": "FP32", "shape": [3, 1], "data": [1.5, 2.5, -1.0]},
        ]}  # fmt: skip
        raw = http_request(url, "POST", "/v2/models/churn/infer", json.dumps(body))[2]
        rest = json.loads(raw)["outputs"][0]["data"]
        np.testing.assert_allclose(got, np.asarray(rest).reshape(-1), rtol=1e-6)
        client.close()


def test_refusals_are_grpc_statuses_naming_the_input(served) -> None:  # type: ignore[no-untyped-def]
    _, client = served
    rows = mixed_request_rows(2)
    inputs = _grpc_inputs(rows)
    bad = grpcclient.InferInput("num_0", [2, 1], "BYTES")
    bad.set_data_from_numpy(np.array([["a"], ["b"]], dtype=object))
    with pytest.raises(InferenceServerException) as caught:
        client.infer("mixed", [bad, *inputs[1:]])
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "num_0" in caught.value.message()
    with pytest.raises(InferenceServerException) as caught:
        client.infer("mixed", inputs[1:])
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "num_0" in caught.value.message()
    with pytest.raises(InferenceServerException) as caught:
        client.infer("nope", inputs)
    assert caught.value.status() == "StatusCode.NOT_FOUND"


def test_grpc_requests_are_counted_in_metrics(served) -> None:  # type: ignore[no-untyped-def]
    url, client = served

    def answered() -> float:
        text = http_request(url, "GET", "/metrics")[2].decode()
        return sum(
            v
            for lab, v in metric_samples(text, "specml_requests_total")
            if lab["endpoint"] == "infer" and lab["code"] == "200"
        )

    before = answered()
    inputs = _grpc_inputs(mixed_request_rows(1))
    for _ in range(5):
        client.infer("mixed", inputs)
    assert answered() - before == 5
