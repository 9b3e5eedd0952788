"""The monitor service fed KServe payload-logger CloudEvents over HTTP, read back through /metrics.

Events are in the logger's documented binary format (ce-* headers, request and response sharing
ce-id; KServe docs "Inference Logger") with Open Inference Protocol bodies; the reference is the
one the export step writes (runtime/monitor/reference.write_reference) for specs/fraud.yaml.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families
from specml.compiler.api import plan_file
from specml.runtime.monitor.reference import ReferenceSet, write_reference
from specml.runtime.monitor.service import DriftGauges, DriftWindow, make_server, window_seconds

ROOT = Path(__file__).resolve().parents[2]
CATEGORIES = ["grocery", "travel", "online", "fuel"]


@pytest.fixture(scope="module")
def plan():
    return plan_file(ROOT / "specs" / "fraud.yaml")


def _rows(plan, n: int, seed: int, shift: float = 0.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for f in plan.training.features:
        if f.datatype == "BYTES":
            out[f.input_name] = rng.choice(CATEGORIES, size=n).astype(object)
        else:
            out[f.input_name] = (rng.gamma(2.0, 10.0, size=n) + shift).astype(np.float32)
    return out


@pytest.fixture(scope="module")
def reference(plan, tmp_path_factory) -> ReferenceSet:
    cols = _rows(plan, 4000, seed=1)
    frame = pd.DataFrame({f.ref: cols[f.input_name] for f in plan.training.features})
    scores = np.random.default_rng(2).beta(2, 8, size=4000)
    folder = tmp_path_factory.mktemp("model")
    write_reference(plan, frame, scores, folder)
    return ReferenceSet.load(folder)


@pytest.fixture
def service(plan, reference):
    clock = {"t": 1_000_000.0}
    window = DriftWindow(plan, window_seconds(plan), clock=lambda: clock["t"])
    server = make_server(window, DriftGauges(plan, reference), 0, host="127.0.0.1")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    yield url, clock
    server.shutdown()
    server.server_close()


def _headers(ce_type: str, event_id: str) -> dict[str, str]:
    """What KServe's logger sends (binary content mode)."""
    return {
        "Content-Type": "application/json",
        "Ce-Specversion": "1.0",
        "Ce-Type": f"org.kubeflow.serving.inference.{ce_type}",
        "Ce-Source": "http://localhost:9081/",
        "Ce-Id": event_id,
        "Ce-Time": "2026-11-25T23:00:00.000000000Z",
        "Ce-Inferenceservicename": "fraud-scorer",
        "Ce-Namespace": "risk",
        "Ce-Component": "predictor",
        "Ce-Endpoint": "canary",
        "Traceparent": "00-7cebb2ae49d33626845711ad585c850c-78b57bf5baf7151f-00",
    }


def _request(plan, cols: dict[str, np.ndarray]) -> dict:
    inputs = []
    for f in plan.training.features:
        values = cols[f.input_name]
        inputs.append(
            {
                "name": f.input_name,
                "shape": [len(values), 1],
                "datatype": f.datatype,
                "data": [v if isinstance(v, str) else float(v) for v in values],
            }
        )
    return {"id": "r", "inputs": inputs}


def _response(scores: np.ndarray) -> dict:
    return {
        "model_name": "fraud-scorer",
        "model_version": "1",
        "outputs": [
            {
                "name": "output",
                "shape": [len(scores), 1],
                "datatype": "FP32",
                "data": scores.tolist(),
            },
            {
                "name": "label",
                "shape": [len(scores), 1],
                "datatype": "BYTES",
                "data": ["1" if s > 0.5 else "0" for s in scores],
            },
        ],
    }


def _post(url: str, headers: dict[str, str], body: dict | bytes) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(f"{url}/", data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def _metrics(url: str) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=30) as resp:
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def _send_batches(
    url: str, plan, batches: int, seed: int, shift: float, score_shift: float
) -> None:
    for b in range(batches):
        cols = _rows(plan, 50, seed=seed + b, shift=shift)
        scores = np.clip(np.random.default_rng(seed + b).beta(2, 8, size=50) + score_shift, 0, 1)
        event_id = str(uuid.uuid4())
        first, second = ("request", "response") if b % 2 else ("response", "request")
        bodies = {"request": _request(plan, cols), "response": _response(scores)}
        status, _ = _post(url, _headers(first, event_id), bodies[first])
        assert status == 202
        status, reply = _post(url, _headers(second, event_id), bodies[second])
        assert status == 202 and reply["rows"] == 50  # paired by ce-id, whichever came first


def _psi(metrics, name: str, **labels: str) -> float:
    return metrics[(name, tuple(sorted({"system": "fraud-scorer", **labels}.items())))]


def test_undrifted_traffic_stays_under_the_drift_alerts(service, plan) -> None:
    url, _ = service
    _send_batches(url, plan, batches=20, seed=100, shift=0.0, score_shift=0.0)
    m = _metrics(url)
    assert _psi(m, "specml_monitor_window_rows") == 1000
    amount = plan.alert("amount_drift")
    for ref in amount.features:
        assert _psi(m, "specml_feature_ks", feature=ref) < amount.warn
    assert _psi(m, "specml_prediction_psi", column="prediction") < plan.alert("score_drift").warn
    assert (
        "specml_feature_psi",
        (("feature", "card_velocity:merchant_category"), ("system", "fraud-scorer")),
    ) in m


def test_shifted_traffic_crosses_the_critical_thresholds(service, plan) -> None:
    url, _ = service
    _send_batches(url, plan, batches=20, seed=300, shift=25.0, score_shift=0.4)
    m = _metrics(url)
    amount = plan.alert("amount_drift")
    assert _psi(m, "specml_feature_ks", feature="card_velocity:txn_amount_1h") > amount.critical
    assert (
        _psi(m, "specml_prediction_psi", column="prediction") > plan.alert("score_drift").critical
    )


def test_the_window_forgets_old_rows(service, plan) -> None:
    url, clock = service
    _send_batches(url, plan, batches=4, seed=500, shift=25.0, score_shift=0.4)
    clock["t"] += window_seconds(plan) + 1
    _send_batches(url, plan, batches=2, seed=600, shift=0.0, score_shift=0.0)
    assert _psi(_metrics(url), "specml_monitor_window_rows") == 100


def test_half_an_event_or_a_foreign_body_adds_nothing(service, plan) -> None:
    url, _ = service
    status, reply = _post(url, _headers("request", "lonely"), _request(plan, _rows(plan, 5, 1)))
    assert (status, reply["rows"]) == (202, 0)
    status, reply = _post(url, {"Content-Type": "application/json"}, {"inputs": []})
    assert status == 400 and "ce-id" in reply["error"]
    status, reply = _post(url, _headers("request", "x"), b"[1, 2]")
    assert status == 400
    assert _psi(_metrics(url), "specml_monitor_window_rows") == 0


def test_structured_mode_events_are_read_too(service, plan) -> None:
    url, _ = service
    cols = _rows(plan, 10, 9)
    for kind, body in (
        ("request", _request(plan, cols)),
        ("response", _response(np.full(10, 0.2))),
    ):
        envelope = {
            "specversion": "1.0",
            "type": f"org.kubeflow.serving.inference.{kind}",
            "source": "http://localhost:9081/",
            "id": "structured-1",
            "datacontenttype": "application/json",
            "data": body,
        }
        status, reply = _post(url, {"Content-Type": "application/cloudevents+json"}, envelope)
        assert status == 202
    assert reply["rows"] == 10


def test_gauge_names_are_the_ones_the_prometheus_rule_reads(plan) -> None:
    from specml.targets.kubeflow.prometheus import alert_expr

    exprs = {a.id: alert_expr(plan, a) for a in plan.alerts}
    assert "specml_feature_ks{" in exprs["amount_drift"]
    assert "specml_prediction_psi{" in exprs["score_drift"]


# ---- the SageMaker drift job: data capture in, CloudWatch figures out ------------------------


def _capture_line(request: dict, answer: dict, base64_answer: bool = False) -> str:
    """One line of SageMaker's data capture (JSON Lines; the AWS docs' documented layout)."""
    import base64

    out = json.dumps(answer)
    return json.dumps(
        {
            "captureData": {
                "endpointInput": {
                    "observedContentType": "application/json",
                    "mode": "INPUT",
                    "data": json.dumps(request),
                    "encoding": "JSON",
                },
                "endpointOutput": {
                    "observedContentType": "application/json",
                    "mode": "OUTPUT",
                    "data": base64.b64encode(out.encode()).decode() if base64_answer else out,
                    "encoding": "BASE64" if base64_answer else "JSON",
                },
            },
            "eventMetadata": {
                "eventId": str(uuid.uuid4()),
                "inferenceTime": "2026-11-25T23:00:00Z",
            },
            "eventVersion": "0",
        }
    )


def _container_answer(scores: np.ndarray) -> dict:
    """What the specml SageMaker container answers for a binary model (runtime/serving/sagemaker)."""
    return {
        "predictions": [
            {"label": "1" if s > 0.5 else "0", "probabilities": {"0": 1 - s, "1": s}}
            for s in scores.tolist()
        ]
    }


def _capture(plan, batches: int, seed: int, shift: float, score_shift: float) -> list[str]:
    lines = []
    for b in range(batches):
        cols = _rows(plan, 50, seed=seed + b, shift=shift)
        scores = np.clip(np.random.default_rng(seed + b).beta(2, 8, size=50) + score_shift, 0, 1)
        if b % 2:  # records by input name, as the container also takes them
            names = [f.input_name for f in plan.training.features]
            request = {
                "instances": [
                    {
                        n: (cols[n][i] if isinstance(cols[n][i], str) else float(cols[n][i]))
                        for n in names
                    }
                    for i in range(50)
                ]
            }
        else:
            request = _request(plan, cols)
        lines.append(_capture_line(request, _container_answer(scores), base64_answer=b % 3 == 0))
    return lines


@pytest.mark.parametrize(("shift", "fires"), [(0.0, False), (25.0, True)])
def test_drift_job_publishes_what_the_alarms_read(plan, reference, shift, fires) -> None:
    import boto3
    from botocore.stub import ANY, Stubber
    from specml.runtime.monitor.cloudwatch import (
        NAMESPACE,
        evaluate,
        metric_data,
        publish,
        read_capture,
    )

    window = DriftWindow(plan, window_seconds(plan))
    assert read_capture(plan, _capture(plan, 20, 700, shift, shift / 60), window) == 1000
    events, report = evaluate(plan, reference, window)
    by_alert = {e.alert_id: e for e in events}
    assert set(by_alert) == {"amount_drift", "score_drift"}
    amount = plan.alert("amount_drift")
    assert (by_alert["amount_drift"].value >= amount.critical) is fires
    from datetime import UTC, datetime

    datums = metric_data(plan, events, report, datetime(2026, 11, 25, tzinfo=UTC))
    alert_values = {
        d["Dimensions"][1]["Value"]: d["Value"] for d in datums if d["MetricName"] == "AlertValue"
    }
    assert alert_values == {k: e.value for k, e in by_alert.items()}
    client = boto3.client(
        "cloudwatch", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="y"
    )
    with Stubber(client) as stub:  # validates every call against CloudWatch's API model
        stub.add_response("put_metric_data", {}, {"Namespace": NAMESPACE, "MetricData": ANY})
        assert publish(client, datums) == 1
        stub.assert_no_pending_responses()
    assert NAMESPACE == "specml/Drift"  # the namespace the alarms and the IAM condition name


def test_drift_job_reads_only_the_window_hours_of_the_capture(plan) -> None:
    import io
    from datetime import UTC, datetime, timedelta

    import boto3
    from botocore.response import StreamingBody
    from botocore.stub import Stubber
    from specml.runtime.monitor.cloudwatch import capture_lines

    now = datetime(2026, 11, 25, 23, 30, tzinfo=UTC)
    keys = [
        "data-capture/fraud-scorer/primary/2026/11/25/23/a.jsonl",
        "data-capture/fraud-scorer/primary/2026/11/25/22/b.jsonl",
        "data-capture/fraud-scorer/primary/2026/11/24/10/old.jsonl",
    ]
    s3 = boto3.client(
        "s3", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="y"
    )
    with Stubber(s3) as stub:
        stub.add_response(
            "list_objects_v2",
            {"Contents": [{"Key": k} for k in keys], "IsTruncated": False},
            {"Bucket": "b", "Prefix": "data-capture/fraud-scorer/"},
        )
        for key, text in ((keys[0], "line-a\n"), (keys[1], "line-b\n")):
            body = StreamingBody(io.BytesIO(text.encode()), len(text))
            stub.add_response("get_object", {"Body": body}, {"Bucket": "b", "Key": key})
        lines = list(
            capture_lines(s3, "s3://b/data-capture/fraud-scorer", now - timedelta(hours=1), now)
        )
        stub.assert_no_pending_responses()
    assert lines == ["line-a", "line-b"]
