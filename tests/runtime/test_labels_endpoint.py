"""POST /v1/models/{name}/labels: delayed labels reach the monitoring folder; bad ones get a 4xx."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from specml.runtime.monitor.labels import (
    MAX_LABELS_PER_REQUEST,
    posted_labels_dir,
    read_posted_labels,
)
from specml.runtime.monitor.requestlog import read_requests, request_log_dir
from specml.runtime.serving import ServerConfig, running_server
from specml.runtime.serving.testing import http_request, json_documents, write_model_dir

LABELS = "/v1/models/churn/labels"
ROW = [0.5, 1.0, 12.0, 3.0, 0.2]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """A server that logs requests under a workdir; yields (url, workdir)."""
    wd = tmp_path_factory.mktemp("wd")
    model = write_model_dir(wd / "serving" / "current")
    config = ServerConfig(model, port=0, batching=False, request_log_dir=request_log_dir(wd))
    with running_server(config) as url:
        yield url, wd


def post(url: str, body: object | bytes, path: str = LABELS) -> tuple[int, dict]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    status, _, out = http_request(url, "POST", path, raw, {"Content-Type": "application/json"})
    return status, json.loads(out)


def infer(url: str, request_id: str) -> None:
    doc = {
        "id": request_id,
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 5], "data": ROW}],
    }
    status, _, _ = http_request(url, "POST", "/v2/models/churn/infer", json.dumps(doc))
    assert status == 200


def test_labels_are_stored_and_join_the_logged_predictions(served) -> None:  # noqa: ANN001
    from specml.runtime.monitor.labels import join_labels

    url, wd = served
    for i in range(3):
        infer(url, f"req-{i}")
    status, doc = post(
        url,
        {"labels": [{"request_id": "req-0", "label": 1}, {"request_id": "req-2", "label": False}]},
    )
    assert (status, doc) == (200, {"accepted": 2})
    status, doc = post(url, {"labels": [{"customer_id": 7, "label": 0.0}]})
    assert (status, doc) == (200, {"accepted": 1})
    posted = read_posted_labels(posted_labels_dir(wd))
    assert sorted(posted["request_id"].dropna()) == ["req-0", "req-2"]
    assert posted.loc[posted["customer_id"] == 7, "label"].tolist() == [0.0]

    # The request log reaches disk every 2 s (checked on the next request): wait for it.
    deadline = time.time() + 10
    requests = read_requests(request_log_dir(wd))
    while len(requests) < 3 and time.time() < deadline:
        infer(url, "filler")
        time.sleep(0.3)
        requests = read_requests(request_log_dir(wd))

    plan = SimpleNamespace(features=SimpleNamespace(label=SimpleNamespace(field="churned")))
    y, output = join_labels(plan, posted, requests, ["customer_id"])  # type: ignore[arg-type]
    assert sorted(y.tolist()) == [0.0, 1.0]  # the entity label has no logged entity: unmatched
    assert output.shape == (2, 1)  # binary: P(positive) per row


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "malformed JSON"),
        (b'{"labels": [{"request_id": "a", "label": NaN}]}', "labels[0].label must be a finite"),
        ([{"request_id": "a", "label": 1}], 'expected {"labels"'),
        ({"labels": "a"}, 'expected {"labels"'),
        ({"labels": []}, "'labels' is empty"),
        ({"labels": [], "extra": 1}, "unknown top-level key(s) ['extra']"),
        ({"labels": [3]}, "labels[0] is int, expected an object"),
        ({"labels": [{"request_id": "a"}]}, "labels[0].label must be a finite number"),
        ({"labels": [{"request_id": "a", "label": "yes"}]}, "labels[0].label must be a finite"),
        ({"labels": [{"request_id": "a", "label": 1e400}]}, "non-finite number Infinity"),
        ({"labels": [{"label": 1}]}, "labels[0] needs request_id or the entity keys"),
        ({"labels": [{"label": 1, "requestid": "a"}]}, "unknown key(s) ['requestid']"),
        ({"labels": [{"label": 1, "request_id": ""}]}, "request_id must be a non-empty string"),
        ({"labels": [{"label": 1, "request_id": "x" * 300}]}, "at most 256 characters"),
        ({"labels": [{"label": 1, "customer_id": [1]}]}, "customer_id must be an integer"),
        (
            {"labels": [{"label": 1, "request_id": "a"}] * (MAX_LABELS_PER_REQUEST + 1)},
            "send at most",
        ),
    ],
)
def test_malformed_labels_are_refused_and_nothing_is_stored(
    served,  # noqa: ANN001
    body: object,
    fragment: str,
) -> None:
    url, wd = served
    before = read_posted_labels(posted_labels_dir(wd))
    status, doc = post(url, body)
    assert status == 400, doc
    assert fragment in doc["error"]
    after = read_posted_labels(posted_labels_dir(wd))
    assert (before is None and after is None) or len(after) == len(before)
    assert http_request(url, "GET", "/v2/health/ready")[0] == 200  # still serving


def test_wrong_method_and_model(served) -> None:  # noqa: ANN001
    url, _ = served
    assert http_request(url, "GET", LABELS)[0] == 405
    status, doc = post(url, {"labels": [{"request_id": "a", "label": 1}]}, "/v1/models/x/labels")
    assert status == 404 and "unknown model 'x'" in doc["error"]


def test_a_server_without_monitoring_says_it_collects_no_labels(tmp_path: Path) -> None:
    config = ServerConfig(write_model_dir(tmp_path / "m"), port=0, batching=False)
    with running_server(config) as url:
        status, doc = post(url, {"labels": [{"request_id": "a", "label": 1}]})
    assert status == 404 and "does not collect labels" in doc["error"]


json_values = json_documents(max_leaves=25)
near_valid = st.fixed_dictionaries(
    {
        "labels": st.lists(
            st.dictionaries(
                st.sampled_from(["label", "request_id", "customer_id", "x"]),
                json_values,
                max_size=3,
            ),
            max_size=4,
        )
    }
)


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.one_of(json_values, near_valid))
def test_random_label_documents_are_stored_whole_or_refused(served, document: object) -> None:  # noqa: ANN001
    """Never a 5xx; a 200 stores exactly the rows it accepted, a 400 stores nothing."""
    url, wd = served

    def stored() -> int:
        return sum(len(f.read_text().splitlines()) for f in posted_labels_dir(wd).glob("*.jsonl"))

    count = stored() if posted_labels_dir(wd).exists() else 0
    status, doc = post(url, document)
    now = stored() if posted_labels_dir(wd).exists() else 0
    if status == 200:
        assert doc["accepted"] == len(document["labels"]) == now - count  # type: ignore[index]
    else:
        assert status == 400 and doc["error"]
        assert now == count
