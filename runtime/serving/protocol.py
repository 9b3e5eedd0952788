"""Open Inference Protocol (KServe v2 REST) codec: JSON tensors plus Triton's binary extension.

`decode_infer` validates a request's framing (ids, parameters, which outputs, binary sizes) and
hands its tensors to `tensors.decode_tensors` (one named input per feature, see tensors.py);
`encode_infer` writes the response, `output` FP32 and `label` BYTES, each JSON or binary.
Binary tensor data follows Triton's extension: the body is a JSON header of
`Inference-Header-Content-Length` bytes followed by the raw little-endian tensors, each input
declaring its size in `parameters.binary_data_size`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from specml.runtime.serving.tensors import (
    InputSchema,
    ProtocolError,
    TensorSpec,
    WireTensor,
    decode_tensors,
    serialize_strings,
)

NUMPY_TO_DATATYPE: dict[str, str] = {
    "float32": "FP32",
    "float64": "FP64",
    "float16": "FP16",
    "int64": "INT64",
    "int32": "INT32",
    "bool": "BOOL",
    "object": "BYTES",
}


_DATATYPE_BY_DTYPE: dict[np.dtype, str] = {np.dtype(k): v for k, v in NUMPY_TO_DATATYPE.items()}
CONTRIBUTIONS = "contributions"  # the output parameters.explain adds (serving/explain.py)


@dataclass(frozen=True)
class OutputRequest:
    """Which output to return and whether in binary form."""

    name: str
    binary: bool


@dataclass
class InferRequest:
    """A decoded, validated infer request: the model's input dict (input name -> [N, 1])."""

    request_id: str | None
    inputs: dict[str, np.ndarray]
    outputs: tuple[OutputRequest, ...]
    explain: bool = False  # parameters.explain: add the `contributions` output (explain.py)


def _reject_constant(name: str) -> float:
    # NaN is accepted as "missing" (imputation lives inside the model); infinities are refused.
    if name == "NaN":
        return math.nan
    raise ProtocolError(f"non-finite number {name} is not allowed in a request")


def parse_json(raw: bytes) -> Any:
    """Parse a JSON document or raise a 400 naming the position of the problem."""
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except ProtocolError:
        raise
    except UnicodeDecodeError:
        raise ProtocolError("request body is not UTF-8 text") from None
    except ValueError as exc:
        raise ProtocolError(f"malformed JSON: {exc}") from None
    except RecursionError:
        raise ProtocolError("malformed JSON: nested too deeply") from None


def split_body(body: bytes, header_length: str | None) -> tuple[Any, bytes]:
    """Split a body into its JSON header and the binary tail (empty without the extension)."""
    if header_length is None:
        return parse_json(body), b""
    try:
        size = int(header_length)
    except ValueError:
        raise ProtocolError("Inference-Header-Content-Length must be an integer") from None
    if size < 0 or size > len(body):
        raise ProtocolError(
            f"Inference-Header-Content-Length {size} is outside the body ({len(body)} bytes)"
        )
    return parse_json(body[:size]), body[size:]


def decode_infer(
    header: Any,
    binary: bytes,
    schema: InputSchema,
    model_outputs: tuple[TensorSpec, ...],
) -> InferRequest:
    """Validate a REST infer request (JSON header + binary tail) against the model."""
    if not isinstance(header, dict):
        raise ProtocolError("request body must be a JSON object")
    request_id = header.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError("'id' must be a string")
    params = header.get("parameters") or {}
    if not isinstance(params, dict):
        raise ProtocolError("'parameters' must be an object")
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise ProtocolError("'inputs' must be a non-empty list of tensors")
    tensors = []
    offset = 0
    for i, tensor in enumerate(inputs):
        if not isinstance(tensor, dict):
            raise ProtocolError(f"inputs[{i}] must be an object")
        name = tensor.get("name")
        where = f"input '{name}'" if isinstance(name, str) else f"inputs[{i}]"
        t_params = tensor.get("parameters") or {}
        if not isinstance(t_params, dict):
            raise ProtocolError(f"{where}.parameters must be an object")
        size = t_params.get("binary_data_size")
        raw = None
        if size is not None:
            if type(size) is not int or size < 0:
                raise ProtocolError(
                    f"{where}.parameters.binary_data_size must be a non-negative integer"
                )
            if offset + size > len(binary):
                raise ProtocolError(
                    f"binary tensor data is {len(binary)} bytes but the inputs up to {where} "
                    f"declare {offset + size}"
                )
            if "data" in tensor:
                raise ProtocolError(f"{where} has both 'data' and binary_data_size")
            raw = binary[offset : offset + size]
            offset += size
        tensors.append(
            WireTensor(name, tensor.get("datatype"), tensor.get("shape"), tensor.get("data"), raw)
        )
    if offset != len(binary):
        raise ProtocolError(
            f"{len(binary) - offset} bytes of binary data follow the JSON header "
            "but no input declares them"
        )
    explain = params.get("explain", False)
    if not isinstance(explain, bool):
        raise ProtocolError(
            "parameters.explain must be a boolean (true adds the 'contributions' output)"
        )
    decoded = decode_tensors(tensors, schema)
    outputs = _decode_outputs(header, params, model_outputs, (CONTRIBUTIONS,) if explain else ())
    if explain and CONTRIBUTIONS not in {o.name for o in outputs}:
        binary = params.get("binary_data_output", False)
        outputs = (*outputs, OutputRequest(CONTRIBUTIONS, binary))
    return InferRequest(request_id, decoded, outputs, explain)


def _decode_outputs(
    header: dict[str, Any],
    params: dict[str, Any],
    model_outputs: tuple[TensorSpec, ...],
    extra: tuple[str, ...] = (),
) -> tuple[OutputRequest, ...]:
    binary_default = params.get("binary_data_output", False)
    if not isinstance(binary_default, bool):
        raise ProtocolError("parameters.binary_data_output must be a boolean")
    known = {o.name for o in model_outputs} | set(extra)
    requested = header.get("outputs")
    if requested is None:
        return tuple(OutputRequest(o.name, binary_default) for o in model_outputs)
    if not isinstance(requested, list):
        raise ProtocolError("'outputs' must be a list")
    result = []
    for i, out in enumerate(requested):
        if not isinstance(out, dict) or not isinstance(out.get("name"), str):
            raise ProtocolError(f"outputs[{i}] must be an object with a 'name'")
        if out["name"] not in known:
            raise ProtocolError(
                f"unknown output {out['name']!r}; known: {', '.join(sorted(known))}"
            )
        o_params = out.get("parameters") or {}
        if not isinstance(o_params, dict):
            raise ProtocolError(f"outputs[{i}].parameters must be an object")
        if o_params.get("classification"):
            raise ProtocolError("the classification extension is not supported")
        binary = o_params.get("binary_data", binary_default)
        if not isinstance(binary, bool):
            raise ProtocolError(f"outputs[{i}].parameters.binary_data must be a boolean")
        result.append(OutputRequest(out["name"], binary))
    return tuple(result)


def encode_infer(
    model_name: str,
    model_version: str,
    request: InferRequest,
    results: dict[str, np.ndarray],
    parameters: dict[str, dict[str, Any]] | None = None,
) -> tuple[bytes, int | None]:
    """Encode the response; returns (body, json header length or None when all JSON).
    `parameters`: per output name, what its tensor's `parameters` say (e.g. the class names)."""
    outputs = []
    tails: list[bytes] = []
    for out in request.outputs:
        array = results[out.name]
        datatype = _DATATYPE_BY_DTYPE.get(array.dtype, "FP32")  # not dtype.name: slow
        entry: dict[str, Any] = {"name": out.name, "datatype": datatype, "shape": list(array.shape)}
        extra = parameters.get(out.name) if parameters else None
        if out.binary:
            if datatype == "BYTES":
                raw = serialize_strings(array)
            else:
                raw = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
            entry["parameters"] = {**(extra or {}), "binary_data_size": len(raw)}
            tails.append(raw)
        else:
            if extra:
                entry["parameters"] = extra
            entry["data"] = array.reshape(-1).tolist()
        outputs.append(entry)
    body: dict[str, Any] = {
        "model_name": model_name,
        "model_version": model_version,
        "outputs": outputs,
    }
    if request.request_id is not None:
        body["id"] = request.request_id
    head = json.dumps(body, separators=(",", ":")).encode()
    if not tails:
        return head, None
    return head + b"".join(tails), len(head)
