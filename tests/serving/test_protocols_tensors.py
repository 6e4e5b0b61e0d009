"""Open Inference Protocol tensors: every datatype, JSON and binary, into a signature and back.

Binary bodies are laid out as the extension specifies (JSON header, then each input's bytes);
BYTES elements are serialised with tritonclient's own `serialize_byte_tensor`, and answers are
read back with its `InferResult`, so both directions are checked against the reference client.
"""

from __future__ import annotations

import gzip
import json
from typing import Any

import numpy as np
import pytest
from tritonclient.http import InferResult
from tritonclient.utils import serialize_byte_tensor

from registry.schemas import DType, FeatureSpec, Signature
from serving.errors import (
    FeatureTypeMismatch,
    InvalidInput,
    InvalidTensor,
    MalformedBody,
    PayloadTooLarge,
    ServingError,
    UnsupportedOutput,
)
from serving.inputs import InputSchema
from serving.protocols.tensors import (
    NUMPY,
    InferRequest,
    decompress,
    encode_response,
    parse_infer_request,
    to_inputs,
)

NUMERIC = ["UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"]
FLOATS = ["FP16", "FP32", "FP64"]


def schema(*features: tuple[str, DType]) -> InputSchema:
    return InputSchema.from_signature(
        Signature(inputs=[FeatureSpec(name=n, dtype=d) for n, d in features])
    )


def binary_body(
    *inputs: tuple[str, str, np.ndarray[Any, Any]], **request: Any
) -> tuple[bytes, str]:
    """A request with every input as binary data, as tritonclient lays it out by default."""
    header: dict[str, Any] = {"inputs": [], **request}
    blobs = []
    for name, datatype, array in inputs:
        if datatype == "BYTES":
            blob = serialize_byte_tensor(array).item() if array.size else b""
        elif datatype == "BOOL":
            blob = array.astype(np.uint8).tobytes()
        else:
            blob = array.astype(NUMPY[datatype]).tobytes()
        blobs.append(blob)
        header["inputs"].append(
            {
                "name": name,
                "shape": list(array.shape),
                "datatype": datatype,
                "parameters": {"binary_data_size": len(blob)},
            }
        )
    text = json.dumps(header).encode()
    return text + b"".join(blobs), str(len(text))


def json_body(*inputs: tuple[str, str, list[Any], list[int]], **request: Any) -> bytes:
    tensors = [{"name": n, "datatype": d, "data": data, "shape": s} for n, d, data, s in inputs]
    return json.dumps({"inputs": tensors, **request}).encode()


@pytest.mark.parametrize("datatype", NUMERIC + FLOATS)
def test_numbers_of_every_width_arrive_as_json_or_binary(datatype: str) -> None:
    values = np.array([[1, 2, 3], [4, 5, 6]])
    from_json = parse_infer_request(
        json_body(("input", datatype, values.tolist(), [2, 3])), header_length=None
    )
    body, length = binary_body(("input", datatype, values))
    from_binary = parse_infer_request(body, header_length=length)
    for parsed in (from_json, from_binary):
        (tensor,) = parsed.inputs
        assert tensor.data.dtype == NUMPY[datatype]
        assert tensor.data.shape == (2, 3)
        assert tensor.data.tolist() == values.tolist()
    # Flat row-major data with the same shape means the same tensor.
    flat = parse_infer_request(
        json_body(("input", datatype, values.reshape(-1).tolist(), [2, 3])), header_length=None
    )
    assert flat.inputs[0].data.tolist() == values.tolist()


def test_bool_and_bytes_arrive_as_json_or_binary() -> None:
    flags = np.array([True, False, True])
    words = np.array([b"churn", b"", "näive".encode()], dtype=object)
    body, length = binary_body(("flag", "BOOL", flags), ("word", "BYTES", words))
    binary = parse_infer_request(body, header_length=length)
    plain = parse_infer_request(
        json_body(
            ("flag", "BOOL", [True, False, True], [3]),
            ("word", "BYTES", ["churn", "", "näive"], [3]),
        ),
        header_length=None,
    )
    for parsed in (binary, plain):
        flag, word = parsed.inputs
        assert flag.data.tolist() == [True, False, True]
        assert word.data.tolist() == [b"churn", b"", "näive".encode()]


@pytest.mark.parametrize("data", [["churn", 1], [1, "churn"], ["churn", True], ["a", 2.5]])
def test_json_bytes_with_anything_but_strings_is_refused_naming_the_tensor(
    data: list[Any],
) -> None:
    with pytest.raises(InvalidTensor, match=r"input 'word': BYTES data must be strings") as caught:
        parse_infer_request(json_body(("word", "BYTES", data, [2])), header_length=None)
    assert caught.value.detail["input"] == "word"


def test_tensors_named_after_features_fill_their_columns_whatever_the_order() -> None:
    mixed = schema(("plan", DType.string), ("age", DType.float64), ("active", DType.bool))
    body, length = binary_body(
        ("active", "BOOL", np.array([[True], [False]])),
        ("age", "FP32", np.array([31.5, 40.0], dtype=np.float32)),
        ("plan", "BYTES", np.array([b"pro", b"free"], dtype=object)),
    )
    inputs, outputs = to_inputs(parse_infer_request(body, header_length=length), mixed)
    assert outputs == ("predict",)
    assert inputs.tolist() == [["pro", 31.5, True], ["free", 40.0, False]]


def test_one_matrix_feeds_every_feature_in_signature_order() -> None:
    floats = schema(("a", DType.float64), ("b", DType.float64))
    request = parse_infer_request(
        json_body(("x", "INT32", [[1, 2], [3, 4]], [2, 2])), header_length=None
    )
    inputs, _ = to_inputs(request, floats)
    assert inputs.dtype == np.float64
    assert inputs.tolist() == [[1.0, 2.0], [3.0, 4.0]]


@pytest.mark.parametrize(
    ("feature", "datatype", "values", "accepted"),
    [
        (DType.int64, "INT64", [1, 2], True),
        (DType.int64, "UINT32", [1, 2], True),
        (DType.int64, "UINT64", [1, 2], False),  # may not fit
        (DType.int64, "FP64", [1.0, 2.0], False),
        (DType.uint8, "INT64", [1, 2], True),
        (DType.uint8, "INT64", [1, -2], False),
        (DType.float32, "INT8", [1, 2], True),
        (DType.bool, "INT8", [1, 0], False),
        (DType.string, "FP64", [1.0, 2.0], False),
    ],
)
def test_a_feature_takes_only_the_datatypes_that_fit_it(
    feature: DType, datatype: str, values: list[Any], accepted: bool
) -> None:
    request = parse_infer_request(
        json_body(("x", datatype, values, [len(values)])), header_length=None
    )
    if accepted:
        inputs, _ = to_inputs(request, schema(("x", feature)))
        assert inputs.reshape(-1).tolist() == values
    else:
        with pytest.raises(FeatureTypeMismatch, match="feature 'x'"):
            to_inputs(request, schema(("x", feature)))


def test_a_version_without_signature_takes_one_matrix() -> None:
    request = parse_infer_request(json_body(("x", "FP64", [[1, 2]], [1, 2])), header_length=None)
    assert to_inputs(request, None)[0].tolist() == [[1.0, 2.0]]
    two = parse_infer_request(
        json_body(("a", "FP64", [1], [1]), ("b", "FP64", [2], [1])), header_length=None
    )
    with pytest.raises(InvalidInput, match="without a signature"):
        to_inputs(two, None)


def test_requested_outputs_and_their_binary_flags() -> None:
    body = json_body(
        ("x", "FP64", [1], [1]),
        outputs=[
            {"name": "predict_proba", "parameters": {"binary_data": True}},
            {"name": "predict"},
        ],
        id="abc",
    )
    request = parse_infer_request(body, header_length=None)
    assert request.outputs == ("predict_proba", "predict")
    assert request.binary == {"predict_proba"}
    assert request.id == "abc"
    everything = parse_infer_request(
        json_body(("x", "FP64", [1], [1]), parameters={"binary_data_output": True}),
        header_length=None,
    )
    assert everything.outputs == ("predict",)
    assert everything.binary == {"predict"}
    with pytest.raises(UnsupportedOutput, match="'__class__'"):
        parse_infer_request(
            json_body(("x", "FP64", [1], [1]), outputs=[{"name": "__class__"}]),
            header_length=None,
        )


@pytest.mark.parametrize(
    ("mangle", "says"),
    [
        (lambda b, n: (b + b"\0", n), "no input claims"),
        (lambda b, n: (b[:-1], n), "runs past the binary data"),
        (lambda b, n: (b, str(len(b) + 1)), "does not fit a body"),
        (lambda b, n: (b, "x"), "does not fit a body"),
    ],
)
def test_binary_data_that_does_not_add_up_is_refused(mangle: Any, says: str) -> None:
    body, length = binary_body(("x", "FP32", np.zeros(4, dtype=np.float32)))
    bad_body, bad_length = mangle(body, length)
    with pytest.raises(InvalidTensor, match=says):
        parse_infer_request(bad_body, header_length=bad_length)


def test_a_binary_size_that_is_not_a_whole_number_of_elements_is_refused() -> None:
    header = {
        "inputs": [
            {
                "name": "x",
                "shape": [2],
                "datatype": "FP32",
                "parameters": {"binary_data_size": 7},
            }
        ]
    }
    text = json.dumps(header).encode()
    with pytest.raises(InvalidTensor, match="needs 8 bytes"):
        parse_infer_request(text + b"\0" * 7, header_length=str(len(text)))


def test_a_header_nested_past_the_predict_bound_is_refused() -> None:
    deep: Any = [1.0]
    for _ in range(40):
        deep = [deep]
    with pytest.raises(MalformedBody, match="nests deeper"):
        parse_infer_request(json_body(("x", "FP64", deep, [1] * 41)), header_length=None)


def test_compressed_bodies_inflate_within_the_limit_only() -> None:
    body = json_body(("x", "FP64", [1.0] * 100, [100]))
    assert decompress(gzip.compress(body), "gzip", limit=10_000) == body
    bomb = gzip.compress(b" " * 1_000_000)
    with pytest.raises(PayloadTooLarge):
        decompress(bomb, "gzip", limit=10_000)
    with pytest.raises(ServingError, match="br"):
        decompress(body, "br", limit=10_000)


@pytest.mark.parametrize("binary", [True, False])
def test_answers_read_back_with_tritonclients_own_parser(binary: bool) -> None:
    names = ("predict", "predict_proba", "labels", "flags", "half")
    request = InferRequest(
        inputs=(), outputs=names, binary=frozenset(names) if binary else frozenset(), id="r1"
    )
    results = [
        np.array([1.5, np.nan]),
        np.array([[0.25, 0.75], [1.0, 0.0]]),
        np.array(["yes", "no"]),
        np.array([True, False]),
        np.array([1.0, 2.0], dtype=np.float16),
    ]
    content, header_length = encode_response(
        b'{"model_name": "m", "model_version": "3"', request, names, results
    )
    assert (header_length is not None) is binary
    parsed = InferResult.from_response_body(content, header_length=header_length)
    response = parsed.get_response()
    assert response["model_version"] == "3"
    assert response["id"] == "r1"
    assert [o["datatype"] for o in response["outputs"]] == ["FP64", "FP64", "BYTES", "BOOL", "FP16"]
    assert np.isnan(parsed.as_numpy("predict")[1])
    assert parsed.as_numpy("predict")[0] == 1.5
    assert parsed.as_numpy("predict_proba").tolist() == [[0.25, 0.75], [1.0, 0.0]]
    labels = parsed.as_numpy("labels").tolist()
    assert [v.decode() if isinstance(v, bytes) else v for v in labels] == ["yes", "no"]
    assert parsed.as_numpy("flags").tolist() == [True, False]
    assert parsed.as_numpy("half").tolist() == [1.0, 2.0]


def bytes_answer(values: list[bytes], *, binary: bool) -> InferResult:
    request = InferRequest(
        inputs=(), outputs=("predict",), binary=frozenset({"predict"} if binary else ())
    )
    content, header_length = encode_response(
        b'{"model_name": "m", "model_version": "1"', request, ["predict"], [np.array(values)]
    )
    return InferResult.from_response_body(content, header_length=header_length)


@pytest.mark.parametrize("binary", [True, False])
def test_bytes_outputs_answer_as_their_text_in_json_and_as_themselves_in_binary(
    binary: bool,
) -> None:
    values = [b"churn", b"", "näive".encode()]
    answer = bytes_answer(values, binary=binary)
    output = answer.get_output("predict")
    assert output["datatype"] == "BYTES"
    if not binary:
        assert output["data"] == ["churn", "", "näive"]
    read = [v.encode() if isinstance(v, str) else v for v in answer.as_numpy("predict").tolist()]
    assert read == values


def test_bytes_outputs_that_are_not_text_are_refused_in_json_but_go_as_binary() -> None:
    values = [b"ok", b"\xff\xfe"]
    with pytest.raises(UnsupportedOutput, match="output 'predict' holds bytes that are not UTF-8"):
        bytes_answer(values, binary=False)
    assert bytes_answer(values, binary=True).as_numpy("predict").tolist() == values
