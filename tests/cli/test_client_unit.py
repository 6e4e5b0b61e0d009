"""The client's pieces without a server: describing an estimator, the upload body, errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from python_multipart.multipart import MultipartParser
from sklearn.linear_model import LinearRegression, LogisticRegression

from berth import errors
from berth.packaging import (
    FilePart,
    describe,
    environment,
    example_of,
    package,
    signature_of,
)
from berth.upload import MultipartBody, sha256_of
from registry.schemas import DType, VersionMetadata
from tests.cli.factories import Frame


def regressor(n_features: int = 3) -> LinearRegression:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, n_features))
    return LinearRegression().fit(x, x.sum(axis=1))


def classifier() -> LogisticRegression:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 2))
    return LogisticRegression().fit(x, np.where(x[:, 0] > 0, "up", "down"))


# --- the signature ------------------------------------------------------------------------------


def test_unnamed_features_are_f0_to_fn_float64_without_a_sample() -> None:
    signature = signature_of(regressor(3))
    assert signature is not None
    assert [(f.name, f.dtype) for f in signature.inputs] == [
        ("f0", DType.float64),
        ("f1", DType.float64),
        ("f2", DType.float64),
    ]
    assert signature.named is False


def test_named_features_come_from_feature_names_in() -> None:
    model = regressor(3)
    # What scikit-learn sets when it was fitted on a DataFrame.
    model.feature_names_in_ = np.array(["age", "income", "tenure"], dtype=object)
    signature = signature_of(model, np.zeros((2, 3), dtype=np.float32))
    assert signature is not None
    assert [f.name for f in signature.inputs] == ["age", "income", "tenure"]
    assert {f.dtype for f in signature.inputs} == {DType.float32}
    assert signature.named is True


def test_dtypes_per_column_from_a_dataframe_like_sample() -> None:
    model = regressor(3)
    model.feature_names_in_ = np.array(["n", "x", "flag"], dtype=object)
    frame = Frame({"n": [1, 2], "x": [0.5, 1.5], "flag": [True, False]})
    signature = signature_of(model, frame)
    assert signature is not None
    assert [f.dtype for f in signature.inputs] == [DType.int64, DType.float64, DType.bool]


def test_object_columns_are_inferred() -> None:
    rows = [[1.0, "a", None], [2, "b", 3.5]]
    signature = signature_of(object(), rows)
    assert signature is not None
    assert [f.dtype for f in signature.inputs] == [DType.float64, DType.string, DType.float64]


def test_a_sample_of_the_wrong_width_is_refused() -> None:
    with pytest.raises(errors.InvalidInput, match="the sample has 2 columns; the model expects 3"):
        signature_of(regressor(3), [[1.0, 2.0]])


def test_no_feature_count_and_no_sample_means_no_signature() -> None:
    assert signature_of(object()) is None


# --- the example and the metadata --------------------------------------------------------------


def test_a_classifier_example_has_predict_and_predict_proba() -> None:
    model = classifier()
    sample = np.random.default_rng(1).normal(size=(8, 2))
    example = example_of(model, sample)
    assert len(example.inputs) == 5  # a few rows are enough to catch a broken load
    assert example.outputs["predict"] == model.predict(sample[:5]).tolist()
    assert np.allclose(example.outputs["predict_proba"], model.predict_proba(sample[:5]))


def test_a_regressor_example_has_predict_only() -> None:
    example = example_of(regressor(2), [[1.0, 2.0]])
    assert list(example.outputs) == ["predict"]


def test_describe_records_the_environment_and_validates() -> None:
    metadata = describe(regressor(2), [[1.0, 2.0]], metrics={"rmse": 0.5}, tags={"team": "a"})
    assert metadata.lineage is not None
    assert metadata.lineage.environment == environment()
    assert {"python", "scikit-learn", "numpy", "joblib"} <= set(environment())
    assert metadata.metrics == {"rmse": 0.5}
    with pytest.raises(errors.InvalidInput, match="metrics"):
        describe(regressor(2), metrics={"bad": float("nan")})
    with pytest.raises(errors.InvalidInput, match="has no predict"):
        describe(object())


def test_a_path_without_an_estimator_is_described_by_the_caller_only() -> None:
    metadata = describe(None, flavor="sklearn", description="as is")
    assert metadata.signature is None
    assert metadata.example is None
    assert metadata.lineage is None


def test_package_serialises_and_renditions_add_parts(tmp_path: Path) -> None:
    model = regressor(2)
    seen: list[Any] = []

    def onnx(estimator: Any, sample: Any, workdir: Path) -> FilePart:
        seen.append((estimator, None if sample is None else sample.shape))
        path = workdir / "model.onnx"
        path.write_bytes(b"onnx bytes")
        return FilePart("onnx", path)

    pkg = package(model, tmp_path, sample=[[1.0, 2.0]], renditions=[onnx, lambda *_: None])
    assert [f.name for f in pkg.files] == ["artifact", "onnx"]
    assert seen == [(model, (1, 2))]
    loaded = joblib.load(pkg.files[0].path)
    assert loaded.predict([[1.0, 2.0]]).tolist() == model.predict([[1.0, 2.0]]).tolist()


# --- the upload body ----------------------------------------------------------------------------


def parse(body: MultipartBody) -> list[tuple[str, bytes]]:
    """Parts in the order a server's streaming parser sees them."""
    parts: list[tuple[str, bytes]] = []
    headers: dict[bytes, bytes] = {}
    field, value = bytearray(), bytearray()

    def on_header_end() -> None:
        headers[bytes(field).lower()] = bytes(value)
        field.clear()
        value.clear()

    def on_headers_finished() -> None:
        name = headers[b"content-disposition"].split(b'name="')[1].split(b'"')[0]
        parts.append((name.decode(), b""))

    def on_part_data(data: bytes, start: int, end: int) -> None:
        name, so_far = parts[-1]
        parts[-1] = (name, so_far + data[start:end])

    parser = MultipartParser(
        body.boundary,
        {
            "on_header_field": lambda d, s, e: field.extend(d[s:e]),
            "on_header_value": lambda d, s, e: value.extend(d[s:e]),
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
        },
    )
    for chunk in body:
        parser.write(chunk)
    parser.finalize()
    return parts


def test_the_body_sends_metadata_first_with_an_exact_length_and_progress(tmp_path: Path) -> None:
    artifact = tmp_path / "model.joblib"
    artifact.write_bytes(np.random.default_rng(0).bytes(3 * 1024 * 1024 + 17))
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"x" * 10)
    metadata = VersionMetadata(sha256=sha256_of(artifact)).model_dump_json().encode()
    progress: list[tuple[int, int]] = []
    body = MultipartBody(
        metadata,
        [FilePart("artifact", artifact), FilePart("onnx", onnx)],
        progress=lambda done, total: progress.append((done, total)),
    )
    assert len(body) == len(b"".join(body))
    progress.clear()
    parts = parse(body)
    assert [name for name, _ in parts] == ["metadata", "artifact", "onnx"]
    assert json.loads(parts[0][1])["sha256"] == hashlib.sha256(artifact.read_bytes()).hexdigest()
    assert parts[1][1] == artifact.read_bytes()
    total = artifact.stat().st_size + 10
    assert progress[-1] == (total, total)
    assert [done for done, _ in progress] == sorted(done for done, _ in progress)


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "family"),
    [
        (400, errors.BadRequest),
        (401, errors.Unauthenticated),
        (403, errors.Forbidden),
        (404, errors.NotFound),
        (409, errors.Conflict),
        (413, errors.PayloadTooLarge),
        (422, errors.InvalidInput),
        (500, errors.ServerError),
        (502, errors.Unavailable),
        (503, errors.Unavailable),
    ],
)
def test_error_answers_become_typed_errors(status: int, family: type[errors.BerthError]) -> None:
    body = {"error": "some_code", "message": "model 'x' says no", "detail": {"model": "x"}}
    error = errors.error_for(status, body, fallback="unused")
    assert type(error) is family
    assert (error.code, error.message, error.detail, error.status) == (
        "some_code",
        "model 'x' says no",
        {"model": "x"},
        status,
    )


def test_an_answer_without_the_error_shape_still_says_what_failed() -> None:
    error = errors.error_for(502, "<html>bad gateway</html>", fallback="listing models failed")
    assert isinstance(error, errors.Unavailable)
    assert error.message == "listing models failed"
    assert error.code == "unavailable"


def test_every_registry_status_has_a_family() -> None:
    from registry.errors import HTTP_STATUS as REGISTRY
    from serving.errors import HTTP_STATUS as SERVING

    for code, status in {**REGISTRY, **SERVING}.items():
        error = errors.error_for(status, {"error": code, "message": code}, fallback="")
        assert type(error) is not errors.BerthError, code
