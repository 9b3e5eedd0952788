"""Online features past their view's TTL are missing, as in the offline (training) join, and
predict-by-entity says per entity what was imputed (unknown entities included) and counts it."""

from __future__ import annotations

import json
import math
import os
from datetime import UTC, datetime, timedelta
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
STATS = [r for r in CHURN_FEATURES if r.startswith("customer_stats:")]
USAGE = [r for r in CHURN_FEATURES if r.startswith("usage:")]
# Both views have a 30-day TTL; these rows are 40 days old. 3 has no usage row (id % 7 == 3),
# 4 is stale in both views, 999 is unknown to the store.
STALE = {"customer_stats": (1, 4), "usage": (2, 4)}
IDS = [0, 1, 2, 3, 4, 999]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_feast_repo(tmp_path_factory.mktemp("feast") / "repo", n_customers=30, stale=STALE)


@pytest.fixture(scope="module")
def model_dir(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model_dir(tmp_path_factory.mktemp("model") / "current", feature_repo=repo)


def _reader(repo: Path, **kwargs):  # noqa: ANN003, ANN202
    from specml.runtime.serving.online_features import OnlineFeatureReader

    return OnlineFeatureReader(repo, CHURN_FEATURES, **kwargs)


def _offline(repo: Path, ids: list[int], as_of: datetime) -> list[list[object]]:
    """Feast's point-in-time join (the training path) as of `as_of`, rows in model input order."""
    import pandas as pd
    from feast import FeatureStore

    store = FeatureStore(repo_path=str(repo))
    entity_df = pd.DataFrame(
        {"customer_id": ids, "event_timestamp": [as_of] * len(ids), "row": range(len(ids))}
    )
    out = pd.DataFrame(index=range(len(ids)))
    for refs in (STATS, USAGE):  # per view: the file store drops rows a view has nothing for
        frame = store.get_historical_features(
            entity_df=entity_df, features=refs, full_feature_names=True
        ).to_df()
        frame = frame.set_index("row")[[r.replace(":", "__") for r in refs]]
        out = out.join(frame.reindex(range(len(ids))))
    rows = out[[r.replace(":", "__") for r in CHURN_FEATURES]].astype("float64").to_numpy()
    return [[None if math.isnan(v) else v for v in row] for row in rows]


def test_reader_drops_values_past_ttl_like_the_offline_join(repo: Path) -> None:
    reader = _reader(repo)
    found = reader.lookup([{"customer_id": i} for i in IDS])
    # Stale values are missing, exactly as the point-in-time join (training) sees them now.
    offline = _offline(repo, IDS, datetime.now(UTC))
    as_floats = [[None if v is None else float(v) for v in row] for row in found.values]
    np.testing.assert_allclose(
        np.array(as_floats, dtype=float), np.array(offline, dtype=float), rtol=1e-6, equal_nan=True
    )
    assert found.missing == [[], STATS, USAGE, USAGE, list(CHURN_FEATURES), list(CHURN_FEATURES)]
    assert found.expired == [[], STATS, USAGE, [], list(CHURN_FEATURES), []]
    assert found.found == [True, True, True, True, False, False]
    # Without the TTL the reader returns what Feast's SQLite read returns: the stale values too.
    raw = _reader(repo, apply_ttl=False).read_values([{"customer_id": 1}])[0]
    assert all(v is not None for v in raw)
    reader.close()


def test_ttl_clock_can_be_fixed(repo: Path) -> None:
    ids = [{"customer_id": i} for i in (0, 1)]
    later = (datetime.now(UTC) + timedelta(days=20)).isoformat()  # fresh rows 20 days old: live
    assert _reader(repo, as_of=later).lookup(ids).missing == [[], STATS]
    much_later = (datetime.now(UTC) + timedelta(days=31)).isoformat()  # past every TTL
    assert _reader(repo, as_of=much_later).lookup(ids).found == [False, False]
    earlier = (datetime.now(UTC) - timedelta(days=15)).isoformat()  # the 40-day rows: 25 days old
    assert _reader(repo, as_of=earlier).lookup(ids).missing == [[], []]
    pointer = repo / "specml_repo.json"  # what materialize_features writes
    with pytest.raises(ValueError, match="materialized_until"):
        _reader(repo, as_of="materialized")  # no pointer yet
    pointer.write_text(json.dumps({"materialized_until": much_later}))
    try:  # the server's features_as_of="materialized" (the skew check) reads this time
        assert _reader(repo, as_of="materialized").lookup(ids).found == [False, False]
    finally:
        pointer.unlink()
    with pytest.raises(ValueError, match="ISO-8601"):
        _reader(repo, as_of="yesterday")


def test_predict_by_entity_reports_imputed_features_and_unknown_entities(
    model_dir: Path, repo: Path
) -> None:
    session = ort.InferenceSession(
        str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    offline = _offline(repo, IDS, datetime.now(UTC))
    x = np.array([[math.nan if v is None else v for v in row] for row in offline], np.float32)
    names = [ref.split(":")[1] for ref in CHURN_FEATURES]
    expected = session.run(["output"], {n: x[:, j : j + 1] for j, n in enumerate(names)})[0]
    with running_server(ServerConfig(model_dir, port=0)) as url:
        body = json.dumps({"entities": [{"customer_id": i} for i in IDS]})
        status, _, raw = http_request(url, "POST", PREDICT, body)
        assert status == 200, raw
        answer = json.loads(raw)
        # the same prediction training-time imputation gives (NaN -> means inside the graph)
        np.testing.assert_allclose(np.asarray(answer["outputs"]["output"]), expected, rtol=1e-6)
        assert answer["found"] == [True, True, True, True, False, False]
        assert answer["missing_features"][0] == [] and answer["missing_features"][1] == STATS
        assert answer["missing_features"][5] == list(CHURN_FEATURES)  # 999: imputed only
        text = http_request(url, "GET", "/metrics")[2].decode()
    lookups = {lb["outcome"]: v for lb, v in metric_samples(text, "specml_entity_lookups_total")}
    assert lookups == {"complete": 1.0, "partial": 3.0, "not_found": 2.0}
    imputed = {
        (lb["feature"], lb["reason"]): v
        for lb, v in metric_samples(text, "specml_imputed_features_total")
    }
    assert imputed[("customer_stats:monthly_spend", "expired")] == 2.0  # 1 and 4
    assert imputed[("customer_stats:monthly_spend", "missing")] == 1.0  # 999
    assert imputed[("usage:logins_7d", "missing")] == 2.0  # 3 and 999
    assert imputed[("usage:logins_7d", "expired")] == 2.0  # 2 and 4
