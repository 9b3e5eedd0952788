"""`python -m specml.runtime drift-job`: drift of a SageMaker endpoint's captured traffic, to CloudWatch.

The sagemaker target's schedule runs this as a processing job in the runtime image. It reads the
endpoint's data capture (JSON Lines under `<capture>/<endpoint>/<variant>/yyyy/mm/dd/hh/`, each
line `{"captureData": {"endpointInput": {...}, "endpointOutput": {...}}, "eventMetadata": ...}`
with the payload as text (`encoding` JSON or CSV) or base64 (BASE64)), keeps the hours of the
longest drift window, compares the requests and answers with the training reference stored
beside the model (runtime/monitor/reference.py), and publishes to CloudWatch (namespace
`specml/Drift`): `AlertValue{System, Alert}` per drift alert (the worst feature's figure, what the
alarms read) and `FeaturePSI|FeatureKS{System, Feature}` per feature.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import tempfile
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from specml.compiler.ir import Plan
from specml.runtime.monitor.events import AlertEvent, evaluate_drift_alerts
from specml.runtime.monitor.service import DriftWindow, tensors, window_seconds

NAMESPACE = "specml/Drift"
ALERT_METRIC = "AlertValue"
FEATURE_METRICS = {"psi": "FeaturePSI", "ks": "FeatureKS"}
MAX_DATUMS_PER_CALL = 1000  # PutMetricData's limit


def _payload(part: dict[str, Any]) -> str:
    data = part.get("data", "")
    return base64.b64decode(data).decode() if part.get("encoding") == "BASE64" else data


def _request_inputs(plan: Plan, body: dict[str, Any]) -> dict[str, np.ndarray]:
    """A captured request (any JSON form the container takes) as input name -> [N] values."""
    if (
        isinstance(body.get("inputs"), list)
        and body["inputs"]
        and isinstance(body["inputs"][0], dict)
    ):
        return {k: v.reshape(len(v), -1)[:, 0] for k, v in tensors(body, "inputs").items()}
    rows = body.get("instances", body.get("inputs", []))
    names = [f.input_name for f in plan.training.features]
    if rows and not isinstance(rows[0], dict | list):
        rows = [rows]  # one flat list = one row
    records = [r if isinstance(r, dict) else dict(zip(names, r, strict=False)) for r in rows]
    return {n: np.asarray([r.get(n) for r in records], dtype=object) for n in names}


def _scores(plan: Plan, body: dict[str, Any]) -> np.ndarray:
    """The model's scores from the container's answer: P(positive), class probabilities, value."""
    if isinstance(body.get("outputs"), list):
        out = tensors(body, "outputs")["output"]
        return out.reshape(len(out), -1)
    rows = []
    for p in body.get("predictions", []):
        if "value" in p:
            rows.append([float(p["value"])])
            continue
        probs = p["probabilities"]
        if len(probs) == 2:  # binary: the score is the positive class's probability
            positive = plan.features.label.positive
            key = (
                str(positive) if positive is not None and str(positive) in probs else list(probs)[1]
            )
            rows.append([float(probs[key])])
        else:
            rows.append([float(v) for v in probs.values()])
    return np.asarray(rows, dtype=np.float64)


def read_capture(plan: Plan, lines: Iterable[str], window: DriftWindow) -> int:
    """Add every captured JSON request/answer pair to the window; returns the rows added."""
    added = 0
    for line in lines:
        if not line.strip():
            continue
        capture = json.loads(line)["captureData"]
        request, answer = capture["endpointInput"], capture["endpointOutput"]
        if "json" not in request.get("observedContentType", "application/json"):
            continue  # CSV requests carry no names when headerless: not judged
        inputs = _request_inputs(plan, json.loads(_payload(request)))
        scores = _scores(plan, json.loads(_payload(answer)))
        added += window.add_pair(inputs, {"output": scores})
    return added


def metric_data(plan: Plan, events: list[AlertEvent], report: Any, at: datetime) -> list[dict]:
    """PutMetricData datums: one AlertValue per evaluated alert, FeaturePSI/KS per feature."""
    system = {"Name": "System", "Value": plan.system.name}
    out = [
        {
            "MetricName": ALERT_METRIC,
            "Dimensions": [system, {"Name": "Alert", "Value": e.alert_id}],
            "Timestamp": at,
            "Value": float(e.value),
            "Unit": "None",
        }
        for e in events
        if e.value is not None
    ]
    for name, d in report.features.items() if report is not None else ():
        if d.n_current == 0:
            continue
        for metric, metric_name in FEATURE_METRICS.items():
            out.append(
                {
                    "MetricName": metric_name,
                    "Dimensions": [system, {"Name": "Feature", "Value": name}],
                    "Timestamp": at,
                    "Value": float(getattr(d, metric)),
                    "Unit": "None",
                }
            )
    return out


def evaluate(plan: Plan, reference: Any, window: DriftWindow) -> tuple[list[AlertEvent], Any]:
    """Drift of the window against the reference: the drift alerts' events and the feature report."""
    import pandas as pd
    from specml.runtime.monitor.drift import check_drift
    from specml.runtime.monitor.reference import prediction_columns

    frame, scores = window.frames()
    if len(frame) == 0:
        return [], None
    features = check_drift(reference.features, frame)
    predictions = None
    if reference.predictions is not None:
        current = pd.DataFrame(scores, columns=prediction_columns(scores))
        predictions = check_drift(reference.predictions, current)
    return evaluate_drift_alerts(plan.alerts, features, predictions, at=time.time()), features


def publish(client: Any, datums: list[dict]) -> int:
    """PutMetricData in chunks (boto3 CloudWatch client); returns the number of calls."""
    calls = 0
    for i in range(0, len(datums), MAX_DATUMS_PER_CALL):
        client.put_metric_data(Namespace=NAMESPACE, MetricData=datums[i : i + MAX_DATUMS_PER_CALL])
        calls += 1
    return calls


def _split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def capture_lines(s3: Any, capture_uri: str, since: datetime, now: datetime) -> Iterator[str]:
    """Lines of the capture files in the hour folders from `since` to `now` (boto3 S3 client)."""
    bucket, prefix = _split(capture_uri.rstrip("/") + "/")
    hours, hour = set(), since.replace(minute=0, second=0, microsecond=0)
    while hour <= now:
        hours.add(f"/{hour:%Y/%m/%d/%H}/")
        hour += timedelta(hours=1)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            key = obj["Key"]
            if any(h in key for h in hours):
                yield from (
                    s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode().splitlines()
                )


def main(argv: list[str] | None = None) -> int:
    """Read the recent capture, compare it with the reference, publish the figures."""
    import boto3
    from specml.runtime.monitor.reference import ReferenceSet

    parser = argparse.ArgumentParser(prog="python -m specml.runtime drift-job")
    parser.add_argument("--plan-uri", required=True, help="s3:// URI of the Plan's JSON")
    parser.add_argument("--capture-uri", required=True, help="s3:// data capture prefix")
    parser.add_argument("--reference-uri", required=True, help="s3:// model folder")
    parser.add_argument("--region", required=True)
    args = parser.parse_args(argv)
    s3 = boto3.client("s3", region_name=args.region)
    bucket, key = _split(args.plan_uri)
    plan = Plan.from_json(s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode())
    with tempfile.TemporaryDirectory() as tmp:
        ref_bucket, ref_prefix = _split(args.reference_uri.rstrip("/") + "/")
        from specml.runtime.monitor.reference import FEATURE_REFERENCE, PREDICTION_REFERENCE

        s3.download_file(
            ref_bucket, ref_prefix + FEATURE_REFERENCE, str(Path(tmp) / FEATURE_REFERENCE)
        )
        from botocore.exceptions import ClientError

        with contextlib.suppress(ClientError):  # optional, as in ReferenceSet.load
            s3.download_file(
                ref_bucket, ref_prefix + PREDICTION_REFERENCE, str(Path(tmp) / PREDICTION_REFERENCE)
            )
        reference = ReferenceSet.load(tmp)
    now = datetime.now(tz=UTC)
    seconds = window_seconds(plan)
    window = DriftWindow(plan, seconds)
    read_capture(
        plan, capture_lines(s3, args.capture_uri, now - timedelta(seconds=seconds), now), window
    )
    events, report = evaluate(plan, reference, window)
    datums = metric_data(plan, events, report, now)
    publish(boto3.client("cloudwatch", region_name=args.region), datums)
    print(json.dumps({"rows": len(window.rows), "published": len(datums)}))
    return 0
