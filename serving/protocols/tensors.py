"""Open Inference Protocol (V2) tensors: requests in, answers out, JSON or binary.

- Datatypes BOOL, INT8-INT64, UINT8-UINT64, FP16, FP32, FP64 and BYTES; data row-major, nested
  or flat, checked against the declared shape.
- The binary tensor data extension (what `tritonclient` sends by default): the JSON header is the
  first `Inference-Header-Content-Length` bytes of the body, and each input with a
  `binary_data_size` parameter takes its bytes, in input order, from what follows; little-endian,
  BOOL one byte, BYTES a 4-byte length before each element. Outputs go back the same way when
  the request asks (`binary_data` per output, or `binary_data_output` for all).
- Tensors map onto a version's signature in one of two ways: one tensor per feature, named after
  it (shape `[rows]` or `[rows, 1]`), as the model metadata advertises; or a single `[rows,
  features]` tensor in signature order, as most Triton clients send a matrix.

Every refusal is a Berth error: `InvalidTensor` (400) when a tensor contradicts itself,
`InvalidInput` and kin (422) when it does not fit the version's signature; the routes render
it in the OIP shape.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from registry.schemas import DType
from serving.errors import (
    FeatureTypeMismatch,
    InvalidInput,
    InvalidTensor,
    MalformedBody,
    MissingFeatures,
    PayloadTooLarge,
    UnsupportedOutput,
)
from serving.inputs import DEFAULT_OUTPUTS, OUTPUT_METHODS, InputSchema, untyped_rows
from serving.limits import check_json

NUMPY: Final[Mapping[str, np.dtype[Any]]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}
"""OIP datatype → the numpy dtype its elements have (little-endian, as binary data is)."""

FROM_DTYPE: Final[Mapping[DType, str]] = {
    DType.bool: "BOOL",
    DType.int8: "INT8",
    DType.int16: "INT16",
    DType.int32: "INT32",
    DType.int64: "INT64",
    DType.uint8: "UINT8",
    DType.uint16: "UINT16",
    DType.uint32: "UINT32",
    DType.uint64: "UINT64",
    DType.float16: "FP16",
    DType.float32: "FP32",
    DType.float64: "FP64",
    DType.string: "BYTES",
}
"""A signature's feature dtype → the OIP datatype the metadata advertises for it."""

_ACCEPTS: Final[Mapping[str, frozenset[str]]] = {
    # Which tensor datatypes can feed a feature of each kind: numbers widen to float, integers
    # stay integers, and booleans and strings are only themselves.
    "f": frozenset({"FP16", "FP32", "FP64", *(f"INT{n}" for n in (8, 16, 32, 64))})
    | frozenset(f"UINT{n}" for n in (8, 16, 32, 64)),
    "i": frozenset({*(f"INT{n}" for n in (8, 16, 32, 64)), *(f"UINT{n}" for n in (8, 16, 32))}),
    "u": frozenset({*(f"UINT{n}" for n in (8, 16, 32, 64)), *(f"INT{n}" for n in (8, 16, 32, 64))}),
    "b": frozenset({"BOOL"}),
    "s": frozenset({"BYTES"}),
}

_JSON_KINDS: Final[Mapping[str, str]] = {
    # numpy kinds a JSON `data` array may parse to, per datatype family.
    "BOOL": "b",
    "INT": "iu",
    "UINT": "iu",
    "FP": "iuf",
    "BYTES": "U",
}

HEADER_LENGTH: Final = "inference-header-content-length"


@dataclass(frozen=True, slots=True)
class Tensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray[Any, Any]
    """Elements in the shape given, as `NUMPY[datatype]` (BYTES as an object array of bytes)."""


@dataclass(frozen=True, slots=True)
class InferRequest:
    """A parsed `POST .../infer` body."""

    inputs: tuple[Tensor, ...]
    outputs: tuple[str, ...] = DEFAULT_OUTPUTS
    binary: frozenset[str] = field(default_factory=frozenset)
    """Names of the outputs to answer as binary data."""
    id: str | None = None


def _family(datatype: str) -> str:
    if datatype.startswith("UINT"):
        return "UINT"
    if datatype.startswith("INT"):
        return "INT"
    if datatype.startswith("FP"):
        return "FP"
    return datatype


def _shape(value: Any, where: str) -> tuple[int, ...]:
    if type(value) is not list or not all(type(d) is int and d >= 0 for d in value):
        raise InvalidTensor(f"{where}: 'shape' must be an array of non-negative integers")
    return tuple(value)


def _parameters(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if type(value) is not dict:
        raise InvalidTensor(f"{where}: 'parameters' must be an object")
    return value


def _json_data(name: str, datatype: str, shape: tuple[int, ...], data: Any) -> np.ndarray[Any, Any]:
    where = f"input '{name}'"
    if type(data) is not list:
        raise InvalidTensor(f"{where}: 'data' must be an array (row-major, nested or flat)")
    try:
        parsed = np.asarray(data)
    except ValueError as exc:
        raise InvalidTensor(f"{where}: 'data' is ragged: {exc}") from exc
    count = math.prod(shape)
    if parsed.size != count or (parsed.ndim > 1 and parsed.shape != shape):
        raise InvalidTensor(
            f"{where}: shape {list(shape)} holds {count} elements, 'data' has {parsed.size}"
            + (f" in shape {list(parsed.shape)}" if parsed.ndim > 1 else ""),
            detail={"input": name, "shape": list(shape), "elements": int(parsed.size)},
        )
    if count and parsed.dtype.kind not in _JSON_KINDS[_family(datatype)]:
        raise InvalidTensor(
            f"{where}: {datatype} data must be "
            + {"BOOL": "booleans", "BYTES": "strings", "FP": "numbers"}.get(
                _family(datatype), "integers"
            ),
            detail={"input": name, "datatype": datatype},
        )
    if datatype == "BYTES":
        # numpy turns ["a", 1] into ["a", "1"]: the elements as sent are what must be strings.
        texts = np.asarray(data, dtype=object).reshape(-1).tolist()
        for i, text in enumerate(texts):
            if type(text) is not str:
                raise InvalidTensor(
                    f"{where}: BYTES data must be strings; element {i} is {json.dumps(text)[:40]}",
                    detail={"input": name, "datatype": datatype, "element": i},
                )
        return np.array([t.encode() for t in texts], dtype=object).reshape(shape)
    target = NUMPY[datatype]
    if target.kind in "iu" and count:
        info = np.iinfo(target)
        if parsed.min() < info.min or parsed.max() > info.max:
            raise InvalidTensor(f"{where}: values do not fit {datatype}")
    return parsed.astype(target).reshape(shape)


def _bytes_elements(name: str, chunk: bytes, count: int) -> np.ndarray[Any, Any]:
    """BYTES binary data: each element a little-endian uint32 length, then that many bytes."""
    out: list[bytes] = []
    offset = 0
    end = len(chunk)
    while offset < end:
        if offset + 4 > end:
            raise InvalidTensor(f"input '{name}': BYTES data ends inside a length prefix")
        (size,) = struct.unpack_from("<I", chunk, offset)
        offset += 4
        if offset + size > end:
            raise InvalidTensor(f"input '{name}': a BYTES element runs past its binary data")
        out.append(chunk[offset : offset + size])
        offset += size
    if len(out) != count:
        raise InvalidTensor(f"input '{name}': {len(out)} BYTES elements, the shape holds {count}")
    array = np.empty(count, dtype=object)
    array[:] = out
    return array


def _binary_data(
    name: str, datatype: str, shape: tuple[int, ...], chunk: bytes
) -> np.ndarray[Any, Any]:
    count = math.prod(shape)
    if datatype == "BYTES":
        return _bytes_elements(name, chunk, count).reshape(shape)
    dtype = NUMPY[datatype]
    itemsize = 1 if datatype == "BOOL" else dtype.itemsize
    if len(chunk) != count * itemsize:
        raise InvalidTensor(
            f"input '{name}': shape {list(shape)} of {datatype} needs {count * itemsize} bytes, "
            f"binary_data_size gives {len(chunk)}",
            detail={"input": name},
        )
    if datatype == "BOOL":
        return np.frombuffer(chunk, dtype=np.uint8).astype(bool).reshape(shape)
    return np.frombuffer(chunk, dtype=dtype).reshape(shape)


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The body without its `Content-Encoding` (gzip or deflate), refusing more than `limit`."""
    if encoding is None or encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate"):
        raise InvalidTensor(f"Content-Encoding '{encoding}' is not supported (gzip, deflate)")
    inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise MalformedBody(f"the {encoding} body does not decompress: {exc}") from exc
    if len(out) > limit or inflater.unconsumed_tail:
        raise PayloadTooLarge(
            f"the body exceeds {limit} bytes once decompressed", detail={"limit": limit}
        )
    return out


def parse_infer_request(body: bytes, header_length: str | None) -> InferRequest:
    """An infer body (the JSON header, then any binary tensor data) → `InferRequest`."""
    binary = b""
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise InvalidTensor(
                f"Inference-Header-Content-Length {header_length!r} does not fit a body of "
                f"{len(body)} bytes"
            )
        split = int(header_length)
        body, binary = body[:split], body[split:]
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise MalformedBody(f"the inference request is not valid JSON: {exc}"[:300]) from exc
    # The same bounds as every predict body: nesting depth and items per array.
    check_json(payload, text=body)
    if type(payload) is not dict:
        raise InvalidTensor("the inference request must be a JSON object with 'inputs'")
    raw_inputs = payload.get("inputs")
    if type(raw_inputs) is not list or not raw_inputs:
        raise InvalidTensor("the inference request needs a non-empty 'inputs' array")
    tensors: list[Tensor] = []
    offset = 0
    for i, raw in enumerate(raw_inputs):
        if type(raw) is not dict:
            raise InvalidTensor(f"inputs[{i}] must be an object")
        name, datatype = raw.get("name"), raw.get("datatype")
        if type(name) is not str or not name:
            raise InvalidTensor(f"inputs[{i}] needs a 'name'")
        if type(datatype) is not str or datatype not in NUMPY:
            raise InvalidTensor(
                f"input '{name}': datatype {datatype!r} is not one of {', '.join(NUMPY)}",
                detail={"input": name, "allowed": list(NUMPY)},
            )
        shape = _shape(raw.get("shape"), f"input '{name}'")
        size = _parameters(raw.get("parameters"), f"input '{name}'").get("binary_data_size")
        if size is not None:
            if type(size) is not int or size < 0 or offset + size > len(binary):
                raise InvalidTensor(
                    f"input '{name}': binary_data_size {size!r} runs past the binary data "
                    f"({len(binary) - offset} bytes left)"
                )
            data = _binary_data(name, datatype, shape, binary[offset : offset + size])
            offset += size
        elif "data" in raw:
            data = _json_data(name, datatype, shape, raw["data"])
        else:
            raise InvalidTensor(f"input '{name}' has neither 'data' nor binary_data_size")
        tensors.append(Tensor(name=name, datatype=datatype, shape=shape, data=data))
    if offset != len(binary):
        raise InvalidTensor(
            f"{len(binary) - offset} bytes of binary data follow the header that no input claims"
        )
    parameters = _parameters(payload.get("parameters"), "the request")
    all_binary = parameters.get("binary_data_output") is True
    outputs: tuple[str, ...] = DEFAULT_OUTPUTS
    binary_outputs: set[str] = set()
    raw_outputs = payload.get("outputs")
    if raw_outputs is not None:
        if type(raw_outputs) is not list or not raw_outputs:
            raise InvalidTensor("'outputs' must be a non-empty array of {\"name\": ...}")
        names: list[str] = []
        for raw in raw_outputs:
            name = raw.get("name") if type(raw) is dict else None
            if type(name) is not str or name not in OUTPUT_METHODS:
                raise UnsupportedOutput(
                    f"unknown output {name!r}; outputs are {', '.join(OUTPUT_METHODS)}",
                    detail={"output": name, "allowed": list(OUTPUT_METHODS)},
                )
            names.append(name)
            flag = _parameters(raw.get("parameters"), f"output '{name}'").get("binary_data")
            if flag is True or (flag is None and all_binary):
                binary_outputs.add(name)
        outputs = tuple(dict.fromkeys(names))
    elif all_binary:
        binary_outputs.add("predict")
    request_id = payload.get("id")
    return InferRequest(
        inputs=tuple(tensors),
        outputs=outputs,
        binary=frozenset(binary_outputs),
        id=request_id if type(request_id) is str else None,
    )


# --- tensors → the 2-D array a version takes -------------------------------------------------


def _accept(tensor: Tensor, kind: str, feature: str, dtype: DType) -> None:
    if tensor.datatype not in _ACCEPTS[kind]:
        raise FeatureTypeMismatch(
            f"input '{tensor.name}' is {tensor.datatype}; feature '{feature}' is "
            f"{dtype.value} ({FROM_DTYPE[dtype]})",
            detail={"input": tensor.name, "feature": feature, "expected": FROM_DTYPE[dtype]},
        )


def _text(tensor: Tensor, feature: str) -> np.ndarray[Any, Any]:
    data = tensor.data
    try:
        texts = [b.decode() for b in data.reshape(-1).tolist()]
    except UnicodeDecodeError as exc:
        raise FeatureTypeMismatch(
            f"input '{tensor.name}': feature '{feature}' takes UTF-8 text: {exc}"
        ) from exc
    return np.array(texts, dtype=object).reshape(data.shape)


def _as_feature(tensor: Tensor, kind: str, feature: str, dtype: DType) -> np.ndarray[Any, Any]:
    """One tensor's values as the column of a feature of `kind`."""
    _accept(tensor, kind, feature, dtype)
    data = tensor.data
    if kind == "s":
        return _text(tensor, feature)
    if kind == "u" and data.dtype.kind == "i" and data.size and data.min() < 0:
        raise FeatureTypeMismatch(
            f"input '{tensor.name}': feature '{feature}' is {dtype.value}, got negative values"
        )
    return data


def _columns(tensors: Sequence[Tensor], schema: InputSchema) -> np.ndarray[Any, Any]:
    by_name = {t.name: t for t in tensors}
    unknown = [t.name for t in tensors if t.name not in schema.index]
    if unknown:
        raise InvalidInput(
            f"inputs {', '.join(repr(n) for n in unknown)} are not features of this version; "
            "send one tensor per feature, or a single [rows, features] tensor",
            detail={"unknown": unknown, "features": list(schema.names)},
        )
    missing = [n for n in schema.names if n not in by_name]
    if missing:
        raise MissingFeatures(
            f"inputs lack features {', '.join(repr(n) for n in missing[:20])}",
            detail={"missing": missing},
        )
    rows: int | None = None
    out: np.ndarray[Any, Any] | None = None
    for j, (feature, dtype, kind) in enumerate(
        zip(schema.names, schema.dtypes, schema.kinds, strict=True)
    ):
        tensor = by_name[feature]
        if len(tensor.shape) == 1 or (len(tensor.shape) == 2 and tensor.shape[1] == 1):
            column_shape = tensor.shape[0]
        else:
            raise InvalidInput(
                f"input '{feature}' has shape {list(tensor.shape)}; a feature's tensor is "
                "[rows] or [rows, 1]",
                detail={"input": feature, "shape": list(tensor.shape)},
            )
        if rows is None:
            rows = column_shape
            out = np.empty((rows, len(schema.names)), dtype=schema.array_dtype)
        elif column_shape != rows:
            raise InvalidInput(
                f"input '{feature}' has {column_shape} rows, the others {rows}",
                detail={"input": feature},
            )
        assert out is not None
        out[:, j] = _as_feature(tensor, kind, feature, dtype).reshape(-1)
    assert out is not None
    return out


def _matrix(tensor: Tensor, schema: InputSchema) -> np.ndarray[Any, Any]:
    width = len(schema.names)
    if len(tensor.shape) != 2 or tensor.shape[1] != width:
        raise InvalidInput(
            f"input '{tensor.name}' has shape {list(tensor.shape)}; a single tensor is "
            f"[rows, {width}] with the features in signature order, or name each tensor after "
            "its feature",
            detail={"input": tensor.name, "shape": list(tensor.shape), "features": width},
        )
    # One check per kind of feature, not per column: the matrix has a single datatype.
    for kind in dict.fromkeys(schema.kinds):
        j = schema.kinds.index(kind)
        _accept(tensor, kind, schema.names[j], schema.dtypes[j])
    data = _text(tensor, schema.names[0]) if tensor.datatype == "BYTES" else tensor.data
    unsigned = [j for j, kind in enumerate(schema.kinds) if kind == "u"]
    if unsigned and data.dtype.kind == "i" and data.size and data[:, unsigned].min() < 0:
        j = unsigned[int(np.argmin(data[:, unsigned].min(axis=0)))]
        raise FeatureTypeMismatch(
            f"input '{tensor.name}': feature '{schema.names[j]}' is {schema.dtypes[j].value}, "
            "got negative values"
        )
    return data.astype(schema.array_dtype, copy=False)


def to_inputs(
    request: InferRequest, schema: InputSchema | None
) -> tuple[np.ndarray[Any, Any], tuple[str, ...]]:
    """The request's tensors as the 2-D array a version takes, and the outputs asked for."""
    tensors = request.inputs
    if schema is None:
        if len(tensors) != 1 or len(tensors[0].shape) != 2:
            raise InvalidInput(
                "this version was stored without a signature: send one [rows, features] tensor",
                detail={},
            )
        data = tensors[0].data
        if data.dtype == object:
            data = np.array([b.decode() for b in data.reshape(-1).tolist()]).reshape(data.shape)
        return untyped_rows(data.tolist()), request.outputs
    if len(tensors) == 1 and tensors[0].name not in schema.index:
        return _matrix(tensors[0], schema), request.outputs
    return _columns(tensors, schema), request.outputs


# --- answers ---------------------------------------------------------------------------------


def datatype_of(array: np.ndarray[Any, Any]) -> str:
    """The OIP datatype of a model output."""
    kind = array.dtype.kind
    if kind == "b":
        return "BOOL"
    if kind in "iu":
        return f"{'U' if kind == 'u' else ''}INT{array.dtype.itemsize * 8}"
    if kind == "f" and array.dtype.itemsize in (2, 4, 8):
        return f"FP{array.dtype.itemsize * 8}"
    return "BYTES"


def _json_text(value: Any, output: str) -> str:
    """One BYTES element as JSON text: bytes as the UTF-8 they hold, anything else as `str`."""
    if not isinstance(value, bytes):
        return str(value)
    try:
        return value.decode()
    except UnicodeDecodeError as exc:
        # A JSON string holds text, not bytes (Triton would copy them in raw, making the body
        # invalid JSON); the binary extension carries any bytes, so that is the way to ask.
        raise UnsupportedOutput(
            f"output '{output}' holds bytes that are not UTF-8 text ({exc.reason} at byte "
            f"{exc.start}), which JSON cannot carry: ask for it as binary data "
            '(`"parameters": {"binary_data": true}`)',
            detail={"output": output},
        ) from exc


def _json_elements(array: np.ndarray[Any, Any], datatype: str, output: str) -> bytes:
    flat = array.reshape(-1)
    if datatype == "BYTES":
        return json.dumps(
            [v if type(v) is str else _json_text(v, output) for v in flat.tolist()]
        ).encode()
    text = json.dumps(flat.tolist())
    if array.dtype.kind == "f" and ("NaN" in text or "Infinity" in text):
        # JSON has no spelling for them; clients read null as NaN into a float array.
        boxed = flat.astype(object)
        boxed[~np.isfinite(flat)] = None
        text = json.dumps(boxed.tolist())
    return text.encode()


def _binary_elements(array: np.ndarray[Any, Any], datatype: str) -> bytes:
    if datatype == "BYTES":
        parts = []
        for value in array.reshape(-1).tolist():
            raw = value if isinstance(value, bytes) else str(value).encode()
            parts.append(struct.pack("<I", len(raw)))
            parts.append(raw)
        return b"".join(parts)
    if datatype == "BOOL":
        return array.astype(np.uint8).tobytes()
    return np.ascontiguousarray(array, dtype=NUMPY[datatype]).tobytes()


def encode_response(
    head: bytes,
    request: InferRequest,
    outputs: Sequence[str],
    results: Sequence[Any],
) -> tuple[bytes, int | None]:
    """The answer body and, when any output is binary, the length of its JSON header.

    `head` is the start of the JSON object (`{"model_name": ..., "model_version": ...`).
    """
    parts = [head]
    if request.id is not None:
        parts.append(b', "id": ' + json.dumps(request.id).encode())
    parts.append(b', "outputs": [')
    blobs: list[bytes] = []
    for i, (name, result) in enumerate(zip(outputs, results, strict=True)):
        array = np.asarray(result)
        datatype = datatype_of(array)
        if i:
            parts.append(b", ")
        parts.append(
            b'{"name": "'
            + name.encode()
            + b'", "datatype": "'
            + datatype.encode()
            + b'", "shape": '
            + json.dumps(list(array.shape)).encode()
        )
        if name in request.binary:
            blob = _binary_elements(array, datatype)
            blobs.append(blob)
            parts.append(b', "parameters": {"binary_data_size": ' + str(len(blob)).encode() + b"}}")
        else:
            parts.append(b', "data": ' + _json_elements(array, datatype, name) + b"}")
    parts.append(b"]}")
    header = b"".join(parts)
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header)
