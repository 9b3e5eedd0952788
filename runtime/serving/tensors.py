"""Model input tensors: the named, typed inputs a model takes and how a client's tensors become
the model's input dict (transport-neutral: the REST codec in protocol.py calls `decode_tensors`,
and the gRPC service reaches it through the REST routes).

A model takes one input per feature, named by its field, shape [-1, 1], datatype FP32 (numbers,
NaN or null = missing), INT64 (integer categories, null = missing) or BYTES (strings, null or ""
= missing). Every check names the input it concerns and raises `ProtocolError` (HTTP 400); a
malformed tensor never reaches the model. A model whose inputs are all FP32 also takes the
single-matrix form: one input `features` [N, F], columns in the model's input order (the
metadata's `parameters.matrix_columns`). Binary BYTES data is Triton's serialisation: per element
a 4-byte little-endian length, then that many bytes (UTF-8 here).
`column_from_values` turns Python values (records, CSV cells, online-store values) into one
input's column.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

NUMERIC_WIRE_DTYPES: dict[str, np.dtype] = {
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "FP16": np.dtype("<f2"),
    "INT64": np.dtype("<i8"),
    "INT32": np.dtype("<i4"),
}
# What a client may send for each model input datatype (converted without loss of meaning).
ACCEPTED: dict[str, tuple[str, ...]] = {
    "FP32": ("FP32", "FP64", "FP16", "INT64", "INT32"),
    "INT64": ("INT64", "INT32"),
    "BYTES": ("BYTES",),
}
MAX_ROWS_PER_REQUEST = 65536
MATRIX_INPUT = "features"
# A missing integer category (JSON null, an empty CSV cell, absent from the online store).
INT64_MISSING = int(np.iinfo(np.int64).min)


class ProtocolError(Exception):
    """A request the server refuses; `status` is the HTTP code, `message` the JSON error text."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    def __reduce__(self) -> tuple[type[ProtocolError], tuple[str, int]]:
        # keeps the status across processes (large bodies are decoded in a helper process)
        return (ProtocolError, (self.message, self.status))


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output as the protocol describes it (shape -1 = any size)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class InputSchema:
    """The model's inputs in order; `matrix` when all are FP32 (the `features` form works)."""

    inputs: tuple[TensorSpec, ...]
    names: tuple[str, ...] = field(init=False)
    matrix: bool = field(init=False)
    _by_name: dict[str, TensorSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(i.name for i in self.inputs))
        object.__setattr__(self, "matrix", all(i.datatype == "FP32" for i in self.inputs))
        object.__setattr__(self, "_by_name", {i.name: i for i in self.inputs})

    def spec(self, name: str) -> TensorSpec | None:
        """The input called `name` (None: the model has none)."""
        return self._by_name.get(name)


@dataclass(frozen=True)
class WireTensor:
    """One input tensor as a client sent it (nothing checked yet): JSON `data` (nested lists;
    strings for BYTES) or `raw` bytes (Triton binary extension, gRPC raw_input_contents)."""

    name: Any
    datatype: Any
    shape: Any
    data: Any = None
    raw: bytes | None = None


def _check_shape(shape: Any, where: str) -> tuple[int, ...]:
    if not isinstance(shape, (list, tuple)) or not shape:
        raise ProtocolError(f"{where}.shape must be a non-empty list of integers")
    for dim in shape:
        if type(dim) is not int or dim < 0:
            raise ProtocolError(f"{where}.shape must hold non-negative integers, got {shape!r}")
    return tuple(shape)


def _numbers(data: Any, datatype: str, count: int, where: str) -> np.ndarray:
    """Turn `data` (flat or nested numbers, null = missing) into a flat array of `count`."""
    if not isinstance(data, (list, tuple)):
        raise ProtocolError(f"{where}.data must be a list of numbers")
    try:
        array = np.array(data)
    except (ValueError, OverflowError):
        # ragged nesting ("inhomogeneous shape") or numbers numpy cannot hold
        raise ProtocolError(
            f"{where}.data must be a regular (non-ragged) list of numbers"
        ) from None
    if array.dtype.kind == "O" and array.size == count:
        array = _nulls_to_missing(array, datatype, where)
    if array.dtype.kind not in "iuf" or (array.size == 0 and count != 0):
        if array.size == 0 and count == 0:
            return np.zeros(0, dtype=np.float32)
        raise ProtocolError(
            f"{where}.data must hold only numbers or null (got {array.dtype.kind!r}-kind values "
            f"such as strings or booleans)"
        )
    if array.size != count:
        raise ProtocolError(f"{where}.data has {array.size} elements but shape needs {count}")
    if datatype.startswith("INT") and array.dtype.kind == "f":
        raise ProtocolError(f"{where}.data holds non-integers but datatype is {datatype}")
    return array.reshape(-1)


def _nulls_to_missing(array: np.ndarray, datatype: str, where: str) -> np.ndarray:
    """null in a numeric tensor is a missing value: NaN (FP) or the INT64 missing marker."""
    flat = array.reshape(-1).tolist()
    if not any(v is None for v in flat):
        return array
    if any(
        isinstance(v, (bool, str)) or not (v is None or isinstance(v, (int, float))) for v in flat
    ):
        return array  # refused by the caller as non-numbers
    fill: float | int = math.nan if datatype.startswith("FP") else INT64_MISSING
    try:
        return np.array([fill if v is None else v for v in flat])
    except OverflowError:
        raise ProtocolError(f"{where}.data holds numbers too large for {datatype}") from None


def _strings(data: Any, count: int, where: str) -> np.ndarray:
    """BYTES as JSON: strings (null = missing = ""), flat or one level nested ([[a], [b]])."""
    if not isinstance(data, (list, tuple)):
        raise ProtocolError(f"{where}.data must be a list of strings")
    flat: list[Any] = []
    for item in data:
        if isinstance(item, (list, tuple)):
            flat.extend(item)
        else:
            flat.append(item)
    if len(flat) != count:
        raise ProtocolError(f"{where}.data has {len(flat)} elements but shape needs {count}")
    out = np.empty(count, dtype=object)
    for i, value in enumerate(flat):
        if type(value) is str:
            out[i] = value if value.isascii() else _unicode(value, where)
        elif value is None:
            out[i] = ""
        elif isinstance(value, bytes):
            out[i] = _utf8(value, where)
        else:
            raise ProtocolError(
                f"{where}.data must hold strings (or null for missing), got {value!r}"
            )
    return out


def _unicode(text: str, where: str) -> str:
    """`text` if it can be UTF-8 encoded: JSON lets a lone surrogate (\\ud800) through, which
    the model could not take (and would fail every request batched with it)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ProtocolError(
            f"{where} holds text that is not valid Unicode (a lone surrogate)"
        ) from None
    return text


def _utf8(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(f"{where} holds bytes that are not UTF-8 text") from None


def _binary_strings(raw: bytes, count: int, where: str) -> np.ndarray:
    """Triton's BYTES serialisation: per element a 4-byte little-endian length, then the bytes."""
    out = np.empty(count, dtype=object)
    pos, end = 0, len(raw)
    for i in range(count):
        if pos + 4 > end:
            raise ProtocolError(
                f"{where}: binary BYTES data ends after {i} of {count} elements "
                "(each element is a 4-byte little-endian length, then its bytes)"
            )
        (size,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if pos + size > end:
            raise ProtocolError(f"{where}: binary BYTES element {i} runs past the data")
        out[i] = _utf8(raw[pos : pos + size], where)
        pos += size
    if pos != end:
        raise ProtocolError(f"{where}: binary BYTES data has {end - pos} bytes after its elements")
    return out


def _binary_numbers(
    raw: bytes, datatype: str, count: int, shape: tuple[int, ...], where: str
) -> np.ndarray:
    """`count` little-endian numbers of the binary extension, refused unless exactly that size."""
    dtype = NUMERIC_WIRE_DTYPES[datatype]
    if len(raw) != count * dtype.itemsize:
        raise ProtocolError(
            f"{where}: binary data is {len(raw)} bytes but shape {list(shape)} "
            f"{datatype} needs {count * dtype.itemsize}"
        )
    return np.frombuffer(raw, dtype=dtype)


def serialize_strings(values: np.ndarray) -> bytes:
    """Triton's BYTES serialisation of an array of str/bytes (length-prefixed, little-endian)."""
    parts = []
    for value in values.reshape(-1).tolist():
        raw = value if isinstance(value, bytes) else str(value).encode("utf-8")
        parts.append(struct.pack("<I", len(raw)))
        parts.append(raw)
    return b"".join(parts)


def _to_model_type(flat: np.ndarray, spec: TensorSpec, where: str) -> np.ndarray:
    """Cast to the model's dtype (callers hold np.errstate(over="ignore"): values beyond FP32
    become inf, refused here)."""
    if spec.datatype == "FP32":
        out = flat.astype(np.float32, copy=False)
        if np.isinf(out).any():
            raise ProtocolError(f"{where} holds infinite values (or values too large for FP32)")
        return out
    if spec.datatype == "INT64":
        return flat.astype(np.int64, copy=False)
    return flat


def _decode_one(tensor: WireTensor, spec: TensorSpec, where: str) -> np.ndarray:
    """One named input -> [N, 1] in the model's dtype."""
    datatype = tensor.datatype
    if datatype not in ACCEPTED[spec.datatype]:
        kind = {"BYTES": "strings", "INT64": "integer categories"}.get(spec.datatype, "numbers")
        raise ProtocolError(
            f"{where} has datatype {datatype!r}, but the model's input '{spec.name}' takes "
            f"{spec.datatype} ({kind}; accepted: {', '.join(ACCEPTED[spec.datatype])})"
        )
    shape = _check_shape(tensor.shape, where)
    if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
        raise ProtocolError(f"{where}.shape {list(shape)} does not match the model's [-1, 1]")
    rows = shape[0]
    if rows > MAX_ROWS_PER_REQUEST:
        raise ProtocolError(f"{where} has {rows} rows; at most {MAX_ROWS_PER_REQUEST} per request")
    if tensor.raw is not None:
        if datatype == "BYTES":
            flat = _binary_strings(tensor.raw, rows, where)
        else:
            flat = _binary_numbers(tensor.raw, datatype, rows, shape, where)
    elif tensor.data is None:
        raise ProtocolError(f"{where} is missing 'data'")
    elif datatype == "BYTES":
        flat = _strings(tensor.data, rows, where)
    else:
        column = _plain_numbers(tensor.data, spec.datatype, datatype, rows)
        if column is not None:
            return column
        flat = _numbers(tensor.data, datatype, rows, where)
    return _to_model_type(flat, spec, where).reshape(rows, 1)


_FP32_MAX = float(np.finfo(np.float32).max)


_INT64_RANGE = (-(2**63), 2**63 - 1)


def _plain_numbers(data: Any, model_datatype: str, datatype: str, rows: int) -> np.ndarray | None:
    """The common case fast: a flat JSON list of `rows` plain numbers that fit the input
    (floats/ints for FP32, ints for INT64) as [rows, 1]; None: take the checked path."""
    if type(data) is not list or len(data) != rows:
        return None
    if model_datatype == "FP32":
        if not datatype.startswith("FP"):
            return None  # integers on the wire: the checked path refuses non-integers
        for v in data:
            if (type(v) is not float and type(v) is not int) or not -_FP32_MAX <= v <= _FP32_MAX:
                return None  # NaN lands here too: the checked path maps it
        return np.array(data, dtype=np.float32).reshape(rows, 1)
    low, high = _INT64_RANGE
    for v in data:
        if type(v) is not int or not low <= v <= high:
            return None
    return np.array(data, dtype=np.int64).reshape(rows, 1)


def _decode_matrix(tensor: WireTensor, schema: InputSchema) -> dict[str, np.ndarray]:
    """The single-matrix form: `features` [N, F] in input order, split into the named inputs."""
    where = f"input '{MATRIX_INPUT}'"
    if not schema.matrix:
        strings = [i.name for i in schema.inputs if i.datatype != "FP32"]
        raise ProtocolError(
            f"this model has non-numeric inputs ({', '.join(strings)}): the single "
            f"'{MATRIX_INPUT}' matrix cannot carry them; send one named input per feature "
            f"({', '.join(schema.names)}), see GET /v2/models/<name>"
        )
    datatype = tensor.datatype
    if datatype not in NUMERIC_WIRE_DTYPES:
        raise ProtocolError(
            f"{where}.datatype {datatype!r} is not supported; use one of "
            f"{', '.join(NUMERIC_WIRE_DTYPES)}"
        )
    shape = _check_shape(tensor.shape, where)
    n = len(schema.inputs)
    if len(shape) != 2 or shape[1] != n:
        raise ProtocolError(f"{where}.shape {list(shape)} does not match the model's [N, {n}]")
    if shape[0] > MAX_ROWS_PER_REQUEST:
        raise ProtocolError(
            f"{where} has {shape[0]} rows; at most {MAX_ROWS_PER_REQUEST} per request"
        )
    count = shape[0] * n
    if tensor.raw is not None:
        flat = _binary_numbers(tensor.raw, datatype, count, shape, where)
    elif tensor.data is None:
        raise ProtocolError(f"{where} is missing 'data'")
    else:
        flat = _numbers(tensor.data, datatype, count, where)
    with np.errstate(over="ignore"):
        matrix = flat.astype(np.float32, copy=False).reshape(shape)
    if np.isinf(matrix).any():
        raise ProtocolError(f"{where} holds infinite values (or values too large for FP32)")
    columns = np.ascontiguousarray(matrix.T)
    return {spec.name: columns[i].reshape(-1, 1) for i, spec in enumerate(schema.inputs)}


def decode_tensors(tensors: Sequence[WireTensor], schema: InputSchema) -> dict[str, np.ndarray]:
    """The model's input dict (name -> [N, 1], model order) from the tensors a client sent."""
    if not tensors:
        raise ProtocolError("'inputs' must be a non-empty list of tensors")
    first = tensors[0]
    if first.name == MATRIX_INPUT and schema.spec(MATRIX_INPUT) is None:
        if len(tensors) != 1:
            raise ProtocolError(
                f"the matrix input '{MATRIX_INPUT}' must be the request's only input"
            )
        return _decode_matrix(first, schema)
    decoded: dict[str, np.ndarray] = {}
    with np.errstate(over="ignore"):  # once per request: it costs microseconds per entry
        for i, tensor in enumerate(tensors):
            name = tensor.name
            if not isinstance(name, str):
                raise ProtocolError(f"inputs[{i}].name must be a string, got {name!r}")
            spec = schema.spec(name)
            if spec is None:
                raise ProtocolError(
                    f"unknown input {name!r}; the model's inputs are {', '.join(schema.names)}"
                )
            if name in decoded:
                raise ProtocolError(f"input '{name}' is given twice")
            decoded[name] = _decode_one(tensor, spec, f"input '{name}'")
    missing = [n for n in schema.names if n not in decoded]
    if missing:
        raise ProtocolError(
            f"missing input{'s' if len(missing) > 1 else ''} "
            f"{', '.join(repr(n) for n in missing)}; the model takes {', '.join(schema.names)}"
        )
    sizes = {name: int(a.shape[0]) for name, a in decoded.items()}
    if len(set(sizes.values())) > 1:
        first_name = schema.names[0]
        other = next(n for n in schema.names if sizes[n] != sizes[first_name])
        raise ProtocolError(
            f"inputs disagree on the batch size: '{first_name}' has {sizes[first_name]} rows, "
            f"'{other}' has {sizes[other]}"
        )
    return {name: decoded[name] for name in schema.names}


def column_from_values(spec: TensorSpec, values: Sequence[Any], where: str) -> np.ndarray:
    """One input's [N, 1] column from Python values (records, CSV cells, online-store values):
    None = missing; numbers for FP32/INT64 (numeric text too, for CSV), text for BYTES."""
    n = len(values)
    if spec.datatype == "BYTES":
        out = np.empty(n, dtype=object)
        for i, v in enumerate(values):
            if v is None:
                out[i] = ""
            elif isinstance(v, str):
                out[i] = v if v.isascii() else _unicode(v, where)
            elif isinstance(v, bytes):
                out[i] = _utf8(v, where)
            else:
                raise ProtocolError(f"{where} must be a string or null, got {v!r}")
        return out.reshape(n, 1)
    integer = spec.datatype == "INT64"
    cells: list[float | int] = []
    for v in values:
        if v is None or (isinstance(v, str) and v.strip() == ""):
            cells.append(INT64_MISSING if integer else math.nan)
            continue
        if isinstance(v, str):
            try:
                v = int(v) if integer else float(v)
            except ValueError:
                kind = "an integer" if integer else "a number"
                raise ProtocolError(f"{where} must be {kind}, got {v!r}") from None
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ProtocolError(f"{where} must be a number or null, got {v!r}")
        if integer and (isinstance(v, float) and not v.is_integer()):
            raise ProtocolError(f"{where} must be an integer, got {v!r}")
        if isinstance(v, float) and math.isinf(v):
            raise ProtocolError(f"{where} is infinite")
        cells.append(int(v) if integer else v)
    try:
        with np.errstate(over="ignore"):
            column = np.array(cells, dtype=np.int64 if integer else np.float32)
    except OverflowError:
        raise ProtocolError(f"{where} holds an integer too large for INT64") from None
    if not integer and np.isinf(column).any():
        raise ProtocolError(f"{where} holds values too large for FP32")
    return column.reshape(n, 1)
