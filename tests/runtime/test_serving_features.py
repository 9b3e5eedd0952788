"""predict-by-entity: the direct SQLite reader returns exactly what Feast's get_online_features
returns, and the endpoint's answer equals Feast values scored by ONNX Runtime in-process."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from specml.runtime.serving import ServerConfig, running_server
from specml.runtime.serving.testing import (
    CHURN_FEATURES,
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


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_feast_repo(tmp_path_factory.mktemp("feast") / "repo", n_customers=60)


@pytest.fixture(scope="module")
def feast_store(repo: Path):
    from feast import FeatureStore

    return FeatureStore(repo_path=str(repo))


@pytest.fixture(scope="module")
def model_dir(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model_dir(tmp_path_factory.mktemp("model") / "current", feature_repo=repo)


def _feast_rows(store, ids: list[int]) -> list[list[object]]:
    """Feast's answer, as rows in model input order (None where missing)."""
    result = store.get_online_features(
        features=list(CHURN_FEATURES), entity_rows=[{"customer_id": i} for i in ids]
    ).to_dict()
    names = [ref.split(":")[1] for ref in CHURN_FEATURES]
    return [[result[n][row] for n in names] for row in range(len(ids))]


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
    x = np.array([[math.nan if v is None else v for v in row] for row in expected_rows], np.float32)
    expected = session.run(None, {"features": x})[0]
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
