"""SageMaker's inference-container contract on top of the same server: `GET /ping` (200 when
ready) and `POST /invocations` on port 8080, the model in /opt/ml/model (or $SM_MODEL_DIR).

`/invocations` accepts, by Content-Type:
- application/json (the default): an Open Inference Protocol v2 infer request
  ({"inputs": [{"name", "datatype", "shape", "data"}]}, Triton's binary extension included), or
  rows as {"instances": [[...], ...]} or {"inputs": [[...], ...]} (one flat list = one row;
  null or NaN = a missing value, imputed by the model);
- text/csv: one row per line, comma-separated numbers, an empty cell = a missing value.
It answers {"predictions": [...]}: the model's output (e.g. class probabilities) per row.
`GET /execution-parameters` serves batch transform's defaults.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from specml.runtime.serving.protocol import (
    MAX_ROWS_PER_REQUEST,
    ProtocolError,
    TensorSpec,
    decode_infer,
    split_body,
)

DEFAULT_MODEL_DIR = Path("/opt/ml/model")
DEFAULT_PORT = 8080


def model_dir_from_env(environ: dict[str, str] | None = None) -> Path:
    """$SM_MODEL_DIR when set, else /opt/ml/model (where SageMaker copies the model data)."""
    env = os.environ if environ is None else environ
    return Path(env.get("SM_MODEL_DIR") or DEFAULT_MODEL_DIR)


def port_from_env(environ: dict[str, str] | None = None) -> int:
    """$SAGEMAKER_BIND_TO_PORT (set by SageMaker for inference pipelines), else 8080."""
    env = os.environ if environ is None else environ
    return int(env.get("SAGEMAKER_BIND_TO_PORT") or DEFAULT_PORT)


def execution_parameters(max_body_bytes: int) -> dict[str, Any]:
    """GET /execution-parameters: batch transform's per-container defaults."""
    return {
        "MaxConcurrentTransforms": 4,
        "BatchStrategy": "MULTI_RECORD",
        "MaxPayloadInMB": max(1, min(100, max_body_bytes // (1024 * 1024))),
    }


def _is_oip(payload: Any) -> bool:
    inputs = payload.get("inputs") if isinstance(payload, dict) else None
    return isinstance(inputs, list) and bool(inputs) and all(isinstance(i, dict) for i in inputs)


def _number(value: Any, where: str) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProtocolError(f"{where} must be a number or null, got {value!r}")
    if math.isinf(value):
        raise ProtocolError(f"{where} is infinite")
    return float(value)


def _rows(rows: Any, key: str, n_features: int) -> np.ndarray:
    if not isinstance(rows, list) or not rows:
        raise ProtocolError(f"'{key}' must be a non-empty list of rows of {n_features} numbers")
    if not isinstance(rows[0], list):
        rows = [rows]  # one flat row
    if len(rows) > MAX_ROWS_PER_REQUEST:
        raise ProtocolError(f"at most {MAX_ROWS_PER_REQUEST} rows per request")
    out = np.empty((len(rows), n_features), dtype=np.float32)
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != n_features:
            raise ProtocolError(
                f"{key}[{i}] must be a list of {n_features} numbers (the model's features)"
            )
        with np.errstate(over="ignore"):
            out[i] = [_number(v, f"{key}[{i}][{j}]") for j, v in enumerate(row)]
    if np.isinf(out).any():
        raise ProtocolError(f"'{key}' holds values too large for FP32")
    return out


def _csv_rows(body: bytes, n_features: int) -> np.ndarray:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("CSV body is not UTF-8 text") from None
    rows: list[list[Any]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        cells = [c.strip() for c in line.split(",")]
        try:
            rows.append([None if c == "" else float(c) for c in cells])
        except ValueError:
            raise ProtocolError(f"CSV line {number} holds a value that is not a number") from None
    if not rows:
        raise ProtocolError("the CSV body holds no rows")
    return _rows(rows, "csv", n_features)


def decode_invocation(
    body: bytes,
    content_type: str,
    header_length: str | None,
    model_input: TensorSpec,
    model_outputs: tuple[TensorSpec, ...],
) -> tuple[np.ndarray, str | None]:
    """The model input float32 [N, F] and the request id (OIP requests only) of an invocation."""
    n_features = model_input.shape[-1]
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "text/csv":
        return _csv_rows(body, n_features), None
    if media not in ("", "application/json", "application/octet-stream", "*/*"):
        raise ProtocolError(
            f"Content-Type {media!r} is not supported; use application/json or text/csv", 415
        )
    header, binary = split_body(body, header_length)
    if _is_oip(header):
        infer = decode_infer(header, binary, model_input, model_outputs)
        return infer.features, infer.request_id
    if not isinstance(header, dict):
        raise ProtocolError(
            'body must be a JSON object: {"instances": [[...], ...]} or a v2 infer request'
        )
    for key in ("instances", "inputs"):
        if key in header:
            return _rows(header[key], key, n_features), None
    raise ProtocolError(
        'body needs "instances" (rows of numbers) or "inputs" (rows, or v2 tensors)'
    )
