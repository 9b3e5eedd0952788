"""predict-by-entity: the direct SQLite reader returns exactly what Feast's get_online_features
returns, the endpoint's answer equals Feast values scored by ONNX Runtime in-process (string
features as strings, rows named by class), and a store that goes away makes the server unready
and predict-by-entity a 503, never a 500."""

from __future__ import annotations

import json
import math
import os
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from specml.runtime.serving import ServerConfig, running_server
from specml.runtime.serving.testing import (
    CHURN_FEATURES,
    PLANS,
    PROFILE_FEATURES,
    http_request,
    make_feast_repo,
    metric_samples,
    write_model_dir,
)

os.environ.setdefault("FEAST_USAGE", "False")
pytest.importorskip("feast")
ort = pytest.importorskip("onnxruntime")

PREDICT = "/v1/models/churn/predict-by-entity"
# 3 and 10 lack usage rows (id % 7 == 3); 999 is unknown to the store altogether
IDS = [0, 1, 3, 5, 10, 42, 999, 5]


FEATURES = (*CHURN_FEATURES, *PROFILE_FEATURES)
NAMES = [ref.split(":")[1] for ref in FEATURES]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_feast_repo(tmp_path_factory.mktemp("feast") / "repo", n_customers=60, strings=True)


@pytest.fixture(scope="module")
def feast_store(repo: Path):
    from feast import FeatureStore

    return FeatureStore(repo_path=str(repo))


@pytest.fixture(scope="module")
def model_dir(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model_dir(tmp_path_factory.mktemp("model") / "current", feature_repo=repo)


def _feast_rows(store, ids: list[int], refs: tuple[str, ...] = CHURN_FEATURES) -> list[list]:
    """Feast's answer, as rows in model input order (None where missing)."""
    result = store.get_online_features(
        features=list(refs), entity_rows=[{"customer_id": i} for i in ids]
    ).to_dict()
    names = [ref.split(":")[1] for ref in refs]
    return [[result[n][row] for n in names] for row in range(len(ids))]


def _feeds(rows: list[list[object]], names: list[str]) -> dict[str, np.ndarray]:
    """ORT feeds from Feast rows: numbers float32 (NaN missing), strings str ("" missing)."""
    feeds = {}
    for j, name in enumerate(names):
        column = [row[j] for row in rows]
        if name == "plan":
            feeds[name] = np.array(["" if v is None else v for v in column], object).reshape(-1, 1)
        else:
            values = [math.nan if v is None else v for v in column]
            feeds[name] = np.array(values, np.float32).reshape(-1, 1)
    return feeds


def test_reader_equals_feast_get_online_features(repo: Path, feast_store) -> None:
    from specml.runtime.serving.online_features import OnlineFeatureReader

    reader = OnlineFeatureReader(repo, CHURN_FEATURES)
    expected = _feast_rows(feast_store, IDS)
    matrix, values = reader.read([{"customer_id": i} for i in IDS])
    assert values == expected  # same Python values, same Nones, same duplicates
    assert expected[2][3] is None and all(v is None for v in expected[6])  # the cases are real
    assert matrix.dtype == np.float32 and matrix.shape == (len(IDS), len(CHURN_FEATURES))
    want = np.array([[math.nan if v is None else v for v in row] for row in expected], np.float32)
    np.testing.assert_array_equal(matrix, want)
    reader.close()


def test_predict_by_entity_equals_feast_plus_onnx(model_dir: Path, feast_store) -> None:
    session = ort.InferenceSession(
        str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    expected_rows = _feast_rows(feast_store, IDS)
    expected = session.run(["output"], _feeds(expected_rows, NAMES[:-1]))[0]
    with running_server(ServerConfig(model_dir, port=0)) as url:
        body = {"entities": [{"customer_id": i} for i in IDS], "return_features": True}
        status, _, raw = http_request(url, "POST", PREDICT, json.dumps(body))
        assert status == 200, raw
        answer = json.loads(raw)
        assert answer["model_name"] == "churn" and answer["model_version"] == "1"
        assert answer["feature_names"] == list(CHURN_FEATURES)
        assert answer["features"] == expected_rows
        got = np.asarray(answer["outputs"]["output"], dtype=np.float32)
        np.testing.assert_array_equal(got, expected)
        # rows named by class: binary no/yes, the score is P(yes)
        first = answer["predictions"][0]
        assert first["label"] == answer["outputs"]["label"][0][0]
        assert first["probabilities"]["yes"] == pytest.approx(float(expected[0, 0]))
        assert first["probabilities"]["no"] == pytest.approx(1 - float(expected[0, 0]))

        bad = [
            ({"entities": [{"cust": 1}]}, "lacks join key 'customer_id'"),
            ({"entities": [{"customer_id": "x"}]}, "customer_id"),
            ({"entities": [{"customer_id": True}]}, "integer or string"),
            ({"entities": [{"customer_id": 1.5}]}, "integer or string"),
            ({"entities": []}, "non-empty"),
            ({"entities": [3]}, "object of join keys"),
            ({"entities": [{"customer_id": 1}], "return_features": "yes"}, "boolean"),
            ([1], "JSON object"),
        ]
        for payload, text in bad:
            status, _, raw = http_request(url, "POST", PREDICT, json.dumps(payload))
            assert status == 400 and text in json.loads(raw)["error"], (payload, raw)
        status, _, raw = http_request(url, "POST", "/v1/models/other/predict-by-entity", "{}")
        assert status == 404

        status, _, raw = http_request(
            url, "POST", PREDICT, json.dumps({"entities": [{"customer_id": 1}]})
        )
        assert status == 200 and "features" not in json.loads(raw)
        metrics = http_request(url, "GET", "/metrics")[2].decode()
        lookups = metric_samples(metrics, "specml_feature_lookup_latency_seconds_count")
        assert lookups and lookups[0][1] >= 2


@pytest.fixture(scope="module")
def string_model_dir(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model_dir(
        tmp_path_factory.mktemp("model") / "current",
        features=FEATURES,
        n_classes=3,
        feature_repo=repo,
        categorical={"plan": PLANS},
    )


def test_string_features_reach_the_model_as_strings(
    string_model_dir: Path, feast_store, tmp_path: Path
) -> None:
    """A string feature from the online store is scored as the string (an unseen plan in the
    unknown bucket, an absent profile as missing), counted per feature, and logged with the
    entity's keys."""
    from specml.runtime.monitor.requestlog import read_requests

    session = ort.InferenceSession(
        str(string_model_dir / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    ids = list(range(12)) + [999]
    rows = _feast_rows(feast_store, ids, FEATURES)
    plans = [row[-1] for row in rows]
    assert "legacy" in plans and None in plans and set(plans) - {None, "legacy"} <= set(PLANS)
    expected, labels = session.run(["output", "label"], _feeds(rows, NAMES))
    log_dir = tmp_path / "requests"
    config = ServerConfig(string_model_dir, port=0, request_log_dir=log_dir)
    with running_server(config) as url:
        body = {"entities": [{"customer_id": i} for i in ids], "return_features": True}
        status, _, raw = http_request(url, "POST", PREDICT, json.dumps(body))
        assert status == 200, raw
        answer = json.loads(raw)
        text = http_request(url, "GET", "/metrics")[2].decode()
    assert [row[-1] for row in answer["features"]] == plans
    np.testing.assert_array_equal(np.asarray(answer["outputs"]["output"], np.float32), expected)
    predictions = answer["predictions"]
    assert [p["label"] for p in predictions] == labels.ravel().tolist()
    for p, probs in zip(predictions, expected.tolist(), strict=True):
        assert list(p["probabilities"]) == ["class_0", "class_1", "class_2"]
        np.testing.assert_allclose(list(p["probabilities"].values()), probs, rtol=1e-6)
    unknown = {lb["feature"]: v for lb, v in metric_samples(text, "specml_feature_unknown_total")}
    missing = {lb["feature"]: v for lb, v in metric_samples(text, "specml_feature_missing_total")}
    assert unknown == {"plan": plans.count("legacy")}
    assert missing["plan"] == plans.count(None)
    logged = read_requests(log_dir)  # flushed at shutdown
    assert [e["customer_id"] for e in logged["entity"]] == ids
    assert [p or None for p in logged["profile:plan"]] == plans


def test_a_deleted_online_store_makes_the_server_unready_not_500(
    repo: Path, tmp_path: Path
) -> None:
    """D6: the store's database deleted after start: readiness 503, predict-by-entity 503 with
    the reason (no traceback), infer keeps working; restored: ready and answering again."""
    copy = shutil.copytree(repo, tmp_path / "repo")
    model = write_model_dir(tmp_path / "model", feature_repo=copy)
    db = copy / "data" / "online.db"
    entity = json.dumps({"entities": [{"customer_id": 1}]})
    with running_server(ServerConfig(model, port=0)) as url:
        assert http_request(url, "POST", PREDICT, entity)[0] == 200  # a connection is open
        saved = db.read_bytes()
        db.unlink()
        for path in ("/v2/health/ready", "/v2/models/churn/ready", "/ping"):
            assert http_request(url, "GET", path)[0] == 503, path
        status, headers, raw = http_request(url, "POST", PREDICT, entity)
        assert status == 503 and headers["retry-after"] == "1"
        error = json.loads(raw)["error"]
        assert "online feature store cannot be read" in error and str(db) in error
        assert "Traceback" not in error
        infer = {
            "inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 5], "data": [1] * 5}]
        }
        assert http_request(url, "POST", "/v2/models/churn/infer", json.dumps(infer))[0] == 200
        db.write_bytes(saved)  # restored (a new file: the reader reopens it)
        assert http_request(url, "GET", "/v2/health/ready")[0] == 200
        status, _, raw = http_request(url, "POST", PREDICT, entity)
        assert status == 200 and json.loads(raw)["found"] == [True]

        with sqlite3.connect(db) as conn:  # a rebuilt store that lacks a view's table
            table = next(
                name
                for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
                if name.endswith("usage")
            )
            conn.execute(f'DROP TABLE "{table}"')
        status, _, raw = http_request(url, "POST", PREDICT, entity)
        assert status == 503 and "no such table" in json.loads(raw)["error"]
        assert http_request(url, "GET", "/v2/health/ready")[0] == 503
        db.unlink()
        db.write_bytes(saved)
        assert http_request(url, "GET", "/v2/health/ready")[0] == 200
        assert http_request(url, "POST", PREDICT, entity)[0] == 200
        text = http_request(url, "GET", "/metrics")[2].decode()
    codes = {
        lb["code"]
        for lb, _ in metric_samples(text, "specml_requests_total")
        if lb["endpoint"] == "predict_by_entity"
    }
    assert codes == {"200", "503"}  # never a 500
