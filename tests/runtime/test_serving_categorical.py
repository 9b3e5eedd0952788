"""Named, typed inputs over real HTTP: string (BYTES) and integer-category (INT64) inputs beside
numbers, in JSON and Triton's binary form (tritonclient.http), unseen and missing categories
scored and counted per feature, policy `error` refused, and every malformed request a 400 that
names the input."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from specml.runtime.serving import ServerConfig, running_server
from specml.runtime.serving.tensors import INT64_MISSING
from specml.runtime.serving.testing import http_request, metric_samples, write_model_dir

tritonclient_http = pytest.importorskip("tritonclient.http")
ort = pytest.importorskip("onnxruntime")

INFER = "/v2/models/penguins/infer"
CLASSES = ("Adelie", "Chinstrap", "Gentoo")
# The spec's order: strings, numbers and an integer category interleaved.
FEATURES = ("p:island", "p:bill_mm", "p:year", "p:mass_g", "p:sex")
SPEC_INPUTS = [
    {"name": "island", "datatype": "BYTES", "shape": [-1, 1]},
    {"name": "bill_mm", "datatype": "FP32", "shape": [-1, 1]},
    {"name": "year", "datatype": "INT64", "shape": [-1, 1]},
    {"name": "mass_g", "datatype": "FP32", "shape": [-1, 1]},
    {"name": "sex", "datatype": "BYTES", "shape": [-1, 1]},
]
ISLANDS = ("Biscoe", "Dream", "Torgersen")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model_dir(
        tmp_path_factory.mktemp("penguins") / "current",
        features=FEATURES,
        model_name="penguins",
        classes=CLASSES,
        categorical={"island": ISLANDS, "year": (2007, 2008, 2009), "sex": ("female", "male")},
        policies={"sex": ("error", "bucket")},
        entity_join_keys=("penguin_id",),
    )


@pytest.fixture(scope="module")
def session(model_dir: Path):
    return ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def server(model_dir: Path):
    with running_server(ServerConfig(model_dir, port=0, max_delay_ms=1)) as url:
        yield url


def _feeds(island: list[str], year: list[int], sex: list[str] | None = None) -> dict:
    n = len(island)
    return {
        "island": np.array(island, dtype=object).reshape(n, 1),
        "bill_mm": np.linspace(35, 50, n, dtype=np.float32).reshape(n, 1),
        "year": np.array(year, dtype=np.int64).reshape(n, 1),
        "mass_g": np.full((n, 1), 4200.0, np.float32),
        "sex": np.array(sex or ["male"] * n, dtype=object).reshape(n, 1),
    }


def _json_body(feeds: dict, **override: object) -> dict:
    inputs = []
    for spec in SPEC_INPUTS:
        array = feeds[spec["name"]]
        tensor = {
            "name": spec["name"],
            "datatype": spec["datatype"],
            "shape": list(array.shape),
            "data": array.ravel().tolist(),
        }
        inputs.append({**tensor, **override.get(spec["name"], {})})  # type: ignore[dict-item]
    return {"inputs": inputs}


def _post(url: str, body: object, headers: dict | None = None) -> tuple[int, dict]:
    payload = body if isinstance(body, (bytes, str)) else json.dumps(body)
    status, _, raw = http_request(url, "POST", INFER, payload, headers)
    return status, json.loads(raw)


def _counter(url: str, name: str, feature: str) -> float:
    text = http_request(url, "GET", "/metrics")[2].decode()
    return sum(v for lb, v in metric_samples(text, name) if lb["feature"] == feature)


def test_metadata_lists_one_input_per_feature_in_spec_order(server: str) -> None:
    meta = json.loads(http_request(server, "GET", "/v2/models/penguins")[2])
    assert meta["inputs"] == SPEC_INPUTS
    assert meta["outputs"][0]["parameters"] == {"classes": list(CLASSES)}
    assert meta["outputs"][1] == {"name": "label", "datatype": "BYTES", "shape": [-1, 1]}
    assert "parameters" not in meta  # no single-matrix form for a model with string inputs


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_bytes_inputs_equal_onnxruntime(server: str, session, binary: bool) -> None:
    feeds = _feeds(["Dream", "Biscoe", "Torgersen", "Dream"], [2007, 2009, 2008, 2008])
    expected, labels = session.run(["output", "label"], feeds)
    client = tritonclient_http.InferenceServerClient(server.removeprefix("http://"))
    inputs = []
    for spec in SPEC_INPUTS:
        tensor = tritonclient_http.InferInput(spec["name"], [4, 1], spec["datatype"])
        tensor.set_data_from_numpy(feeds[spec["name"]], binary_data=binary)
        inputs.append(tensor)
    outputs = [
        tritonclient_http.InferRequestedOutput(n, binary_data=binary) for n in ("output", "label")
    ]
    result = client.infer("penguins", inputs, outputs=outputs)
    np.testing.assert_array_equal(result.as_numpy("output"), expected)
    got = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label").ravel()]
    assert got == labels.ravel().tolist() and set(got) <= set(CLASSES)


def test_unseen_category_is_scored_and_counted(server: str, session) -> None:
    before = _counter(server, "specml_feature_unknown_total", "island")
    year_before = _counter(server, "specml_feature_unknown_total", "year")
    feeds = _feeds(["Atlantis", "Dream", "Zürich"], [2007, 2031, 2009])
    status, doc = _post(server, _json_body(feeds))
    assert status == 200, doc
    expected = session.run(["output"], feeds)[0]  # the graph's unknown bucket
    np.testing.assert_allclose(np.asarray(doc["outputs"][0]["data"]).reshape(3, 3), expected)
    assert _counter(server, "specml_feature_unknown_total", "island") == before + 2
    assert _counter(server, "specml_feature_unknown_total", "year") == year_before + 1
    assert _counter(server, "specml_feature_unknown_total", "sex") == 0  # all known


def test_missing_values_are_scored_and_counted(server: str, session) -> None:
    before = {
        f: _counter(server, "specml_feature_missing_total", f)
        for f in ("island", "year", "bill_mm")
    }
    feeds = _feeds(["", "Dream"], [2007, 2008])
    body = _json_body(
        feeds,
        island={"data": [None, "Dream"]},  # null = missing, as ""
        year={"data": [None, 2008]},
        bill_mm={"data": [None, 41.5]},
    )
    status, doc = _post(server, body)
    assert status == 200, doc
    feeds["year"][0, 0] = INT64_MISSING
    feeds["bill_mm"][:, 0] = [np.nan, 41.5]
    expected = session.run(["output"], feeds)[0]
    np.testing.assert_allclose(np.asarray(doc["outputs"][0]["data"]).reshape(2, 3), expected)
    for feature in ("island", "year", "bill_mm"):
        assert _counter(server, "specml_feature_missing_total", feature) == before[feature] + 1


def test_policy_error_refuses_the_unknown_value_by_name(server: str) -> None:
    status, doc = _post(server, _json_body(_feeds(["Dream"], [2007], ["unknown-sex"])))
    assert status == 400
    assert "input 'sex'" in doc["error"] and "'unknown-sex'" in doc["error"]
    assert "policy" in doc["error"]


def _binary_request(tensors: list[tuple[dict, bytes]]) -> tuple[bytes, dict]:
    header = {
        "inputs": [{**spec, "parameters": {"binary_data_size": len(raw)}} for spec, raw in tensors]
    }
    head = json.dumps(header).encode()
    return head + b"".join(raw for _, raw in tensors), {
        "Inference-Header-Content-Length": str(len(head))
    }


def _bytes_raw(values: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


def test_binary_bytes_round_trip_and_malformed_elements(server: str, session) -> None:
    feeds = _feeds(["Biscoe"], [2008])
    tensors = []
    for spec in SPEC_INPUTS:
        array = feeds[spec["name"]]
        if spec["datatype"] == "BYTES":
            raw = _bytes_raw([v.encode() for v in array.ravel()])
        else:
            raw = array.astype(array.dtype.newbyteorder("<")).tobytes()
        tensors.append(({**spec, "shape": [1, 1]}, raw))
    body, headers = _binary_request(tensors)
    status, doc = _post(server, body, headers)
    assert status == 200, doc
    np.testing.assert_array_equal(
        np.asarray(doc["outputs"][0]["data"], np.float32), session.run(["output"], feeds)[0][0]
    )
    broken = [
        (struct.pack("<I", 50) + b"Biscoe", "runs past"),  # length beyond the data
        (b"\x01\x00", "ends after 0 of 1"),  # a truncated length prefix
        (_bytes_raw([b"Biscoe", b"Dream"]), "after its elements"),  # more than shape says
        (_bytes_raw([b"\xff\xfe"]), "not UTF-8"),
    ]
    for raw, text in broken:
        body, headers = _binary_request([(tensors[0][0], raw), *tensors[1:]])
        status, doc = _post(server, body, headers)
        assert status == 400 and "input 'island'" in doc["error"] and text in doc["error"], doc


BAD = [
    ({"island": {"datatype": "FP32", "data": [1.0]}}, "input 'island' has datatype 'FP32'"),
    ({"year": {"datatype": "FP32", "data": [2007.0]}}, "input 'year' has datatype 'FP32'"),
    ({"bill_mm": {"datatype": "BYTES", "data": ["40"]}}, "input 'bill_mm' has datatype 'BYTES'"),
    ({"island": {"data": [5]}}, "input 'island'.data must hold strings"),
    ({"bill_mm": {"data": ["x"]}}, "input 'bill_mm'.data must hold only numbers"),
    ({"year": {"data": [2007.5]}}, "input 'year'.data holds non-integers"),
    ({"island": {"shape": [1, 2], "data": ["Dream", "Dream"]}}, "input 'island'.shape [1, 2]"),
    ({"mass_g": {"shape": [2, 1], "data": [1.0, 2.0]}}, "disagree on the batch size"),
    ({"island": {"name": "isle"}}, "unknown input 'isle'"),
    # a lone surrogate parses as JSON but cannot reach the model (nor fail others' batch)
    ({"island": {"data": ["\ud800"]}}, "input 'island' holds text that is not valid Unicode"),
]


@pytest.mark.parametrize(("override", "text"), BAD)
def test_malformed_named_inputs_get_a_400_naming_the_input(
    server: str, override: dict, text: str
) -> None:
    status, doc = _post(server, _json_body(_feeds(["Dream"], [2007]), **override))
    assert status == 400 and text in doc["error"], doc


def test_missing_duplicate_and_matrix_inputs_are_refused(server: str) -> None:
    body = _json_body(_feeds(["Dream"], [2007]))
    without = {"inputs": [t for t in body["inputs"] if t["name"] != "year"]}
    status, doc = _post(server, without)
    assert status == 400 and "missing input 'year'" in doc["error"]
    status, doc = _post(server, {"inputs": [*body["inputs"], body["inputs"][0]]})
    assert status == 400 and "input 'island' is given twice" in doc["error"]
    matrix = {
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 5], "data": [0] * 5}]
    }
    status, doc = _post(server, matrix)
    assert status == 400 and "send one named input per feature" in doc["error"]
    assert "island" in doc["error"]


def test_int32_is_accepted_for_an_int64_input(server: str, session) -> None:
    feeds = _feeds(["Dream"], [2009])
    status, doc = _post(server, _json_body(feeds, year={"datatype": "INT32"}))
    assert status == 200, doc
    np.testing.assert_allclose(doc["outputs"][0]["data"], session.run(["output"], feeds)[0][0])


named = st.fixed_dictionaries(
    {
        "inputs": st.lists(
            st.fixed_dictionaries(
                {
                    "name": st.sampled_from([s["name"] for s in SPEC_INPUTS] + ["x", "features"]),
                    "datatype": st.sampled_from(["FP32", "FP64", "INT64", "INT32", "BYTES", "x"]),
                    "shape": st.lists(st.integers(-1, 3), max_size=3),
                    "data": st.lists(
                        st.none() | st.text(max_size=5) | st.integers() | st.floats(), max_size=4
                    ),
                }
            ),
            max_size=6,
        )
    }
)


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(named)
def test_random_named_tensors_never_break_the_server(server: str, document: dict) -> None:
    status, raw = _post(server, json.dumps(document).replace("NaN", "0"))
    if status == 200:  # valid by chance: a real answer
        assert [o["name"] for o in raw["outputs"]] == ["output", "label"]
    else:
        assert status == 400 and raw["error"], raw


def test_a_folder_that_disagrees_with_its_graph_is_refused(model_dir: Path, tmp_path: Path) -> None:
    from specml.runtime.serving.model import ModelLoadError, ServedModel

    manifest = json.loads((model_dir / "serving.json").read_text())
    cases = [
        ({**manifest, "inputs": manifest["inputs"][::-1]}, "do not match serving.json inputs"),
        (
            {
                **manifest,
                "inputs": [{**manifest["inputs"][0], "datatype": "FP32"}, *manifest["inputs"][1:]],
            },
            "model input 'island' is BYTES in model.onnx but FP32 in serving.json",
        ),
        ({**manifest, "format": 1, "input_name": "features"}, "format 1"),
        ({**manifest, "inputs": manifest["inputs"][:2]}, "lists 5 features but 2 inputs"),
    ]
    for i, (doc, text) in enumerate(cases):
        folder = tmp_path / str(i)
        folder.mkdir()
        (folder / "model.onnx").write_bytes((model_dir / "model.onnx").read_bytes())
        (folder / "serving.json").write_text(json.dumps(doc))
        with pytest.raises(ModelLoadError, match=text):
            ServedModel(folder)


records = st.fixed_dictionaries(
    {
        "instances": st.lists(
            st.dictionaries(
                st.sampled_from([s["name"] for s in SPEC_INPUTS] + ["x"]),
                st.none() | st.text(max_size=5) | st.integers() | st.floats() | st.booleans(),
                max_size=6,
            )
            | st.lists(st.none() | st.text(max_size=3) | st.integers(), max_size=6),
            max_size=3,
        )
    }
)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(records)
def test_random_invocation_records_never_break_the_server(server: str, document: dict) -> None:
    body = json.dumps(document).replace("NaN", "0")
    status, _, raw = http_request(server, "POST", "/invocations", body)
    doc = json.loads(raw)
    if status == 200:
        assert len(doc["predictions"]) == len(document["instances"])
        assert all(p["label"] in CLASSES for p in doc["predictions"])
    else:
        assert status == 400 and doc["error"], doc
