"""The apply's train-serve skew check: the exported model behind a real local server."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from specml.compiler.errors import Diagnostic, SpecError, TargetError
from specml.compiler.ir import Plan

__all__ = ["ServedScorer", "check_served_skew", "infer_request", "served_scorer"]


def check_served_skew(plan: Plan, artifacts: dict[str, Path], say: Any) -> dict[str, Any]:
    """Train-serve skew check on the exported model; a disagreement stops the apply."""
    from specml.runtime.steps.skew import check_skew

    onnx_dir = artifacts["export_onnx.onnx_model"]
    try:
        with served_scorer(plan, onnx_dir) as served:
            report = check_skew(
                plan,
                onnx_dir,
                artifacts["train.model"],
                artifacts["build_training_set.training_set"],
                predict_online=served.by_entity,
                predict_inputs=served.by_inputs,
            )
    except SpecError:
        raise
    except Exception as exc:
        raise TargetError(
            [
                Diagnostic(
                    f"the train-serve skew check failed to run: {type(exc).__name__}: {exc}",
                    stage="target",
                    code="skew_check_failed",
                    hint=f"the exported model is in {onnx_dir}; nothing was registered",
                )
            ]
        ) from exc
    say(
        f"  skew check on {report['compared_rows']} entities ({report['stale_rows']} stale "
        f"online, skipped): max |diff| offline vs online store "
        f"{report['offline_vs_online_max_abs_diff']:.2e}, offline vs HTTP server "
        f"{report.get('offline_vs_served_max_abs_diff', float('nan')):.2e} (by entity), "
        f"{report.get('holdout_vs_served_inputs_max_abs_diff', float('nan')):.2e} (named inputs)"
    )
    if not report["passed"]:
        raise TargetError(
            [
                Diagnostic(
                    "train-serve skew: offline and online scoring disagree "
                    f"(features max |diff| {report['feature_max_abs_diff']:.3g}, predictions "
                    f"{report['offline_vs_online_max_abs_diff']:.3g}, served "
                    f"{report.get('offline_vs_served_max_abs_diff', 0.0):.3g} by entity, "
                    f"{report.get('holdout_vs_served_inputs_max_abs_diff', 0.0):.3g} by named "
                    "inputs, "
                    f"{report['features_missing_online']} values missing online, "
                    f"tolerance {report['tolerance']}; failed: {', '.join(report['failed'])})",
                    stage="target",
                    code="train_serve_skew",
                    hint="check feature dtypes and TTLs in features.views; nothing was registered",
                )
            ]
        )
    return report


@dataclass(frozen=True)
class ServedScorer:
    """A model behind the real local server, scored two ways: by entity (features from the online
    store) and by named inputs (raw columns, strings as BYTES)."""

    by_entity: Callable[[list[dict[str, Any]]], Any]
    by_inputs: Callable[[dict[str, Any]], Any]


@contextlib.contextmanager
def served_scorer(plan: Plan, model_dir: Path) -> Iterator[ServedScorer]:
    """The model in `model_dir` behind a real local HTTP server (batching per the Plan, any free
    port), with its predict-by-entity endpoint and its Open Inference Protocol named inputs."""
    import numpy as np
    from specml.runtime.serving.server import running_server
    from specml.targets.local.serve import endpoint_config

    # TTLs as of the skew check's offline leg
    config = endpoint_config(plan, model_dir, "127.0.0.1", 0, features_as_of="materialized")
    name = plan.registry.name
    with running_server(config) as url:

        def by_entity(rows: list[dict[str, Any]]) -> Any:
            outputs = []
            for start in range(0, len(rows), 1024):
                body = json.dumps({"entities": rows[start : start + 1024]})
                payload = _ok(url, f"/v1/models/{name}/predict-by-entity", body)
                outputs.append(np.asarray(payload["outputs"]["output"], "float32"))
            return np.concatenate(outputs) if outputs else np.zeros((0, 1), "float32")

        def by_inputs(columns: dict[str, Any]) -> Any:
            body = json.dumps(infer_request(plan, columns), allow_nan=False)
            payload = _ok(url, f"/v2/models/{name}/infer", body)
            out = next(o for o in payload["outputs"] if o["name"] == "output")
            return np.asarray(out["data"], "float32").reshape(out["shape"])

        yield ServedScorer(by_entity, by_inputs)


def infer_request(plan: Plan, columns: dict[str, Any]) -> dict[str, Any]:
    """An Open Inference Protocol request: one named input per feature, [N, 1], missing values
    as JSON null (numbers) or "" (strings)."""
    import math

    inputs = []
    for ref in plan.training.features:
        values = columns[ref.input_name].tolist()
        if ref.datatype == "BYTES":
            data = ["" if v is None else str(v) for v in values]
        elif ref.datatype == "INT64":
            from specml.runtime.steps.common import INT_MISSING

            data = [None if v == INT_MISSING else int(v) for v in values]
        else:
            data = [None if math.isnan(v) else float(v) for v in values]
        inputs.append(
            {
                "name": ref.input_name,
                "shape": [len(data), 1],
                "datatype": ref.datatype,
                "data": data,
            }
        )
    return {"inputs": inputs, "outputs": [{"name": "output"}]}


def _ok(url: str, path: str, body: str) -> Any:
    """POST a JSON body; the decoded answer, or an error naming the status."""
    status, _, payload = _post(url, path, body)
    if status != 200:
        raise RuntimeError(f"the server answered {status} to {path}: {payload[:300]!r}")
    return json.loads(payload)


def _post(url: str, path: str, body: str) -> tuple[int, dict[str, str], bytes]:
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
    try:
        conn.request("POST", path, body=body.encode(), headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()
