"""SageMaker's inference-container contract on top of the same server: `GET /ping` (200 when
ready) and `POST /invocations` on port 8080, the model in /opt/ml/model (or $SM_MODEL_DIR).

`/invocations` accepts, by Content-Type:
- application/json (the default):
  - records by input name: {"instances": [{"cut": "Ideal", "carat": 0.3, ...}, ...]} (every
    input named in every record; null = a missing value);
  - rows in the model's input order: {"instances": [[0.3, "Ideal", ...], ...]} or
    {"inputs": [[...], ...]} (one flat list = one row; null or NaN = a missing value);
  - an Open Inference Protocol v2 infer request ({"inputs": [{"name", "datatype", "shape",
    "data"}, ...]}, Triton's binary extension included);
- text/csv: one row per line; a first line naming the inputs is a header (columns then in any
  order), otherwise columns are in the model's input order; an empty cell = a missing value.
It answers {"predictions": [...]}, one entry per row, named by class:
- classification: {"label": "Adelie", "probabilities": {"Adelie": 0.91, "Chinstrap": 0.06,
  "Gentoo": 0.03}} (binary: both classes, the positive one's probability is the model's score);
- regression: {"value": 3.2}.
predict-by-entity answers the same rows under "predictions".
`GET /execution-parameters` serves batch transform's defaults.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
from specml.runtime.serving.model import ServingManifest
from specml.runtime.serving.protocol import decode_infer, split_body
from specml.runtime.serving.tensors import (
    MAX_ROWS_PER_REQUEST,
    InputSchema,
    ProtocolError,
    TensorSpec,
    column_from_values,
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
    # v2 tensors name themselves and carry a shape/datatype; records (by input name) do not
    return (
        isinstance(inputs, list)
        and bool(inputs)
        and all(
            isinstance(i, dict) and "name" in i and ("shape" in i or "datatype" in i)
            for i in inputs
        )
    )


def _columns(schema: InputSchema, columns: list[list[Any]], where: str) -> dict[str, np.ndarray]:
    return {
        spec.name: column_from_values(spec, column, f"{where} '{spec.name}'")
        for spec, column in zip(schema.inputs, columns, strict=True)
    }


def _records(records: list[Any], key: str, schema: InputSchema) -> dict[str, np.ndarray]:
    """{"instances": [{input: value, ...}, ...]}: every input named in every record."""
    names = schema.names
    known = set(names)
    columns: list[list[Any]] = [[] for _ in names]
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise ProtocolError(f"{key}[{i}] must be an object of input values, like {key}[0]")
        if record.keys() != known:
            unknown = sorted(set(record) - known)
            if unknown:
                raise ProtocolError(
                    f"{key}[{i}] names unknown input {unknown[0]!r}; the model's inputs are "
                    f"{', '.join(names)}"
                )
            absent = [n for n in names if n not in record]
            raise ProtocolError(
                f"{key}[{i}] lacks input {absent[0]!r} (null marks a missing value)"
            )
        for col, name in enumerate(names):
            columns[col].append(record[name])
    return _columns(schema, columns, "input")


def _rows(rows: Any, key: str, schema: InputSchema) -> dict[str, np.ndarray]:
    n_inputs = len(schema.inputs)
    if not isinstance(rows, list) or not rows:
        raise ProtocolError(
            f"'{key}' must be a non-empty list of records (objects by input name) or rows of "
            f"{n_inputs} values"
        )
    if len(rows) > MAX_ROWS_PER_REQUEST:
        raise ProtocolError(f"at most {MAX_ROWS_PER_REQUEST} rows per request")
    if isinstance(rows[0], dict):
        return _records(rows, key, schema)
    if not isinstance(rows[0], list):
        rows = [rows]  # one flat row
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != n_inputs:
            raise ProtocolError(
                f"{key}[{i}] must be a list of {n_inputs} values (the model's inputs, in order: "
                f"{', '.join(schema.names)})"
            )
    return _columns(schema, [list(c) for c in zip(*rows, strict=True)], "input")


def _csv_rows(body: bytes, schema: InputSchema) -> dict[str, np.ndarray]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("CSV body is not UTF-8 text") from None
    try:
        # a blank line is no row; "," is a row of missing values
        lines = [row for row in csv.reader(io.StringIO(text)) if len(row) > 1 or row[:1] != [""]]
        lines = [row for row in lines if row]
    except csv.Error as exc:
        raise ProtocolError(f"malformed CSV: {exc}") from None
    if not lines:
        raise ProtocolError("the CSV body holds no rows")
    names = schema.names
    header = [c.strip() for c in lines[0]]
    order = list(range(len(names)))
    first = 1
    if set(header) & set(names):  # a header row: columns by name
        unknown = [c for c in header if c not in names]
        absent = [n for n in names if n not in header]
        if unknown or absent or len(header) != len(names):
            problem = f"unknown column {unknown[0]!r}" if unknown else f"no column {absent[0]!r}"
            raise ProtocolError(f"CSV header: {problem}; the model's inputs are {', '.join(names)}")
        order = [header.index(n) for n in names]
    else:
        first = 0
    rows = lines[first:]
    if not rows:
        raise ProtocolError("the CSV body holds a header but no rows")
    if len(rows) > MAX_ROWS_PER_REQUEST:
        raise ProtocolError(f"at most {MAX_ROWS_PER_REQUEST} rows per request")
    columns: list[list[Any]] = [[] for _ in names]
    for number, row in enumerate(rows, first + 1):
        if len(row) != len(names):
            raise ProtocolError(
                f"CSV line {number} has {len(row)} values; the model takes {len(names)}"
            )
        for col, at in enumerate(order):
            cell = row[at].strip()
            columns[col].append(cell if cell != "" else None)
    try:
        return _columns(schema, columns, "CSV column")
    except ProtocolError as exc:
        raise ProtocolError(f"CSV: {exc.message}") from None


def decode_invocation(
    body: bytes,
    content_type: str,
    header_length: str | None,
    schema: InputSchema,
    model_outputs: tuple[TensorSpec, ...],
) -> tuple[dict[str, np.ndarray], str | None]:
    """The model's input dict and the request id (OIP requests only) of an invocation."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "text/csv":
        return _csv_rows(body, schema), None
    if media not in ("", "application/json", "application/octet-stream", "*/*"):
        raise ProtocolError(
            f"Content-Type {media!r} is not supported; use application/json or text/csv", 415
        )
    header, binary = split_body(body, header_length)
    if _is_oip(header):
        infer = decode_infer(header, binary, schema, model_outputs)
        return infer.inputs, infer.request_id
    if not isinstance(header, dict):
        raise ProtocolError(
            'body must be a JSON object: {"instances": [{"input": value, ...}, ...]} or a v2 '
            "infer request"
        )
    for key in ("instances", "inputs"):
        if key in header:
            return _rows(header[key], key, schema), None
    raise ProtocolError(
        'body needs "instances" (records by input name, or rows) or "inputs" (rows, or v2 tensors)'
    )


def prediction_rows(manifest: ServingManifest, results: dict[str, np.ndarray]) -> list[Any]:
    """One entry per row, named by class (see the module docstring)."""
    output = np.asarray(results[manifest.output_name], dtype=np.float64)
    values = output.reshape(output.shape[0], -1).tolist()
    if not manifest.classes:
        return [{"value": row[0]} if len(row) == 1 else {"values": row} for row in values]
    names = [str(c) for c in manifest.classes]
    labels = results.get("label")
    label_list = labels.reshape(-1).tolist() if labels is not None else [None] * len(values)
    rows = []
    if len(names) == 2 and output.shape[-1] == 1:
        positive = str(manifest.positive_class) if manifest.positive_class is not None else names[1]
        negative = names[0] if names[1] == positive else names[1]
        for label, (p,) in zip(label_list, values, strict=True):
            rows.append({"label": label, "probabilities": {negative: 1.0 - p, positive: p}})
        return rows
    for label, row in zip(label_list, values, strict=True):
        if len(row) != len(names):  # a graph wider than its classes (checked at load)
            rows.append({"label": label, "output": row})
            continue
        if label is None:
            label = names[int(np.argmax(row))]
        rows.append({"label": label, "probabilities": dict(zip(names, row, strict=True))})
    return rows
