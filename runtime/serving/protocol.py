"""Open Inference Protocol (KServe v2 REST) codec: JSON tensors plus Triton's binary extension.

Decoding validates everything a client controls (names, datatypes, shapes, element types) and
raises `ProtocolError` with an HTTP status and a message; it never lets a malformed request reach
the model. Binary tensor data follows Triton's extension: the body is a JSON header of
`Inference-Header-Content-Length` bytes followed by the raw little-endian tensors, each input
declaring its size in `parameters.binary_data_size`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

# Datatypes accepted for numeric inputs; every one is cast to the model's float32 input.
INPUT_DTYPES: dict[str, np.dtype] = {
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "FP16": np.dtype("<f2"),
    "INT64": np.dtype("<i8"),
    "INT32": np.dtype("<i4"),
}
NUMPY_TO_DATATYPE: dict[str, str] = {
    "float32": "FP32",
    "float64": "FP64",
    "float16": "FP16",
    "int64": "INT64",
    "int32": "INT32",
    "bool": "BOOL",
}
_DATATYPE_BY_DTYPE: dict[np.dtype, str] = {np.dtype(k): v for k, v in NUMPY_TO_DATATYPE.items()}
MAX_ROWS_PER_REQUEST = 65536


class ProtocolError(Exception):
    """A request the server refuses; `status` is the HTTP code, `message` the JSON error text."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output as the protocol describes it (shape -1 = any size)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class OutputRequest:
    """Which output to return and whether in binary form."""

    name: str
    binary: bool


@dataclass
class InferRequest:
    """A decoded, validated infer request: the model input as float32 [N, F]."""

    request_id: str | None
    features: np.ndarray
    outputs: tuple[OutputRequest, ...]


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


def _check_shape(shape: Any, where: str) -> tuple[int, ...]:
    if not isinstance(shape, list) or not shape:
        raise ProtocolError(f"{where}.shape must be a non-empty list of integers")
    for dim in shape:
        if type(dim) is not int or dim < 0:
            raise ProtocolError(f"{where}.shape must hold non-negative integers, got {shape!r}")
    return tuple(shape)


def _json_data(data: Any, datatype: str, count: int, where: str) -> np.ndarray:
    """Turn `data` (flat or nested numbers) into a flat array of `count` elements."""
    if not isinstance(data, list):
        raise ProtocolError(f"{where}.data must be a list of numbers")
    try:
        array = np.array(data)
    except (ValueError, OverflowError):
        # ragged nesting ("inhomogeneous shape") or numbers numpy cannot hold
        raise ProtocolError(
            f"{where}.data must be a regular (non-ragged) list of numbers"
        ) from None
    if array.dtype.kind not in "iuf" or (array.size == 0 and count != 0):
        if array.size == 0 and count == 0:
            return np.zeros(0, dtype=np.float32)
        raise ProtocolError(
            f"{where}.data must hold only numbers (got {array.dtype.kind!r}-kind values such as "
            f"strings, booleans or nulls)"
        )
    if array.size != count:
        raise ProtocolError(f"{where}.data has {array.size} elements but shape needs {count}")
    if datatype.startswith("INT") and array.dtype.kind == "f":
        raise ProtocolError(f"{where}.data holds non-integers but datatype is {datatype}")
    return array.reshape(-1)


def decode_infer(
    header: Any,
    binary: bytes,
    model_input: TensorSpec,
    model_outputs: tuple[TensorSpec, ...],
) -> InferRequest:
    """Validate an infer request against the model's single input and return it as float32."""
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
    if len(inputs) != 1:
        raise ProtocolError(
            f"model takes exactly one input '{model_input.name}', got {len(inputs)}"
        )
    tensor = inputs[0]
    where = "inputs[0]"
    if not isinstance(tensor, dict):
        raise ProtocolError(f"{where} must be an object")
    name = tensor.get("name")
    if name != model_input.name:
        raise ProtocolError(f"unknown input {name!r}; the model's input is '{model_input.name}'")
    datatype = tensor.get("datatype")
    if datatype not in INPUT_DTYPES:
        raise ProtocolError(
            f"{where}.datatype {datatype!r} is not supported; use one of {', '.join(INPUT_DTYPES)}"
        )
    shape = _check_shape(tensor.get("shape"), where)
    n_features = model_input.shape[-1]
    if len(shape) != 2 or shape[1] != n_features:
        raise ProtocolError(
            f"{where}.shape {list(shape)} does not match the model's [N, {n_features}]"
        )
    if shape[0] > MAX_ROWS_PER_REQUEST:
        raise ProtocolError(
            f"{where} has {shape[0]} rows; at most {MAX_ROWS_PER_REQUEST} per request"
        )
    count = shape[0] * shape[1]
    t_params = tensor.get("parameters") or {}
    if not isinstance(t_params, dict):
        raise ProtocolError(f"{where}.parameters must be an object")
    binary_size = t_params.get("binary_data_size")
    if binary_size is not None:
        dtype = INPUT_DTYPES[datatype]
        if type(binary_size) is not int or binary_size != count * dtype.itemsize:
            raise ProtocolError(
                f"{where}.parameters.binary_data_size must be {count * dtype.itemsize} for shape "
                f"{list(shape)} {datatype}, got {binary_size!r}"
            )
        if len(binary) != binary_size:
            raise ProtocolError(
                f"binary tensor data is {len(binary)} bytes but {where} declares {binary_size}"
            )
        if "data" in tensor:
            raise ProtocolError(f"{where} has both 'data' and binary_data_size")
        flat = np.frombuffer(binary, dtype=dtype)
    else:
        if binary:
            raise ProtocolError("binary data follows the JSON header but no input declares it")
        if "data" not in tensor:
            raise ProtocolError(f"{where} is missing 'data'")
        flat = _json_data(tensor["data"], datatype, count, where)
    with np.errstate(over="ignore"):  # values beyond FP32 become inf, refused just below
        features = flat.astype(np.float32, copy=False).reshape(shape)
    if np.isinf(features).any():
        raise ProtocolError(f"{where} holds infinite values (or values too large for FP32)")
    return InferRequest(request_id, features, _decode_outputs(header, params, model_outputs))


def _decode_outputs(
    header: dict[str, Any], params: dict[str, Any], model_outputs: tuple[TensorSpec, ...]
) -> tuple[OutputRequest, ...]:
    binary_default = params.get("binary_data_output", False)
    if not isinstance(binary_default, bool):
        raise ProtocolError("parameters.binary_data_output must be a boolean")
    known = {o.name for o in model_outputs}
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
) -> tuple[bytes, int | None]:
    """Encode the response; returns (body, json header length or None when all JSON)."""
    outputs = []
    tails: list[bytes] = []
    for out in request.outputs:
        array = results[out.name]
        entry: dict[str, Any] = {
            "name": out.name,
            "datatype": _DATATYPE_BY_DTYPE.get(array.dtype, "FP32"),  # not dtype.name: slow
            "shape": list(array.shape),
        }
        if out.binary:
            raw = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            tails.append(raw)
        else:
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
