from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from registry.schemas import DType
from serving.errors import (
    FeatureCountMismatch,
    FeatureTypeMismatch,
    InvalidInput,
    MissingFeatures,
    UnsupportedOutput,
)
from serving.inputs import InputSchema, parse_body
from tests.serving.factories import signature

SCHEMA = InputSchema.from_signature(signature(("age", "income", "tenure")))
EXPECTED = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])


@pytest.mark.parametrize(
    "body",
    [
        {"inputs": [[1, 2, 3], [4, 5, 6]]},
        {"inputs": [{"age": 1, "income": 2, "tenure": 3}, {"tenure": 6, "income": 5, "age": 4}]},
        {"inputs": {"income": [2, 5], "age": [1, 4], "tenure": [3, 6]}},
        {"instances": [[1, 2, 3], [4.0, 5.0, 6.0]]},
        {"instances": [{"age": 1, "income": 2, "tenure": 3}, {"age": 4, "income": 5, "tenure": 6}]},
        {
            "dataframe_split": {
                "columns": ["age", "income", "tenure"],
                "data": [[1, 2, 3], [4, 5, 6]],
            }
        },
        {
            "dataframe_split": {
                "columns": ["tenure", "age", "income"],
                "data": [[3, 1, 2], [6, 4, 5]],
            }
        },
        {"dataframe_split": {"data": [[1, 2, 3], [4, 5, 6]], "index": [0, 1]}},
        {
            "dataframe_records": [
                {"age": 1, "income": 2, "tenure": 3},
                {"age": 4, "income": 5, "tenure": 6},
            ]
        },
    ],
    ids=[
        "inputs-rows",
        "inputs-records",
        "inputs-columns",
        "instances-rows",
        "instances-records",
        "dataframe_split",
        "dataframe_split-reordered",
        "dataframe_split-no-columns",
        "dataframe_records",
    ],
)
def test_every_body_shape_gives_the_same_array(body: dict[str, Any]) -> None:
    array, outputs = parse_body(body, SCHEMA)
    assert array.dtype == np.float64
    np.testing.assert_array_equal(array, EXPECTED)
    assert outputs == ("predict",)


def test_one_row_as_input() -> None:
    array, _ = parse_body({"input": [1, 2, 3]}, SCHEMA)
    np.testing.assert_array_equal(array, EXPECTED[:1])
    array, _ = parse_body({"input": {"tenure": 3, "age": 1, "income": 2}}, SCHEMA)
    np.testing.assert_array_equal(array, EXPECTED[:1])


def test_extra_record_keys_and_columns_are_ignored() -> None:
    array, _ = parse_body(
        {"dataframe_records": [{"age": 1, "income": 2, "tenure": 3, "id": 9}]}, SCHEMA
    )
    np.testing.assert_array_equal(array, EXPECTED[:1])
    body = {
        "dataframe_split": {"columns": ["id", "age", "income", "tenure"], "data": [[9, 1, 2, 3]]}
    }
    np.testing.assert_array_equal(parse_body(body, SCHEMA)[0], EXPECTED[:1])


def test_null_in_a_float_feature_is_a_missing_value() -> None:
    array, _ = parse_body({"inputs": [[1, None, 3]]}, SCHEMA)
    assert math.isnan(array[0, 1])


def test_outputs_are_parsed_deduplicated_and_limited_to_known_methods() -> None:
    _, outputs = parse_body(
        {"inputs": [[1, 2, 3]], "outputs": ["predict", "predict_proba", "predict"]}, SCHEMA
    )
    assert outputs == ("predict", "predict_proba")
    with pytest.raises(UnsupportedOutput, match="__class__"):
        parse_body({"inputs": [[1, 2, 3]], "outputs": ["__class__"]}, SCHEMA)
    with pytest.raises(InvalidInput, match="'outputs' must be"):
        parse_body({"inputs": [[1, 2, 3]], "outputs": "predict"}, SCHEMA)


def test_mixed_dtypes_keep_strings_and_check_each_kind() -> None:
    schema = InputSchema.from_signature(
        signature(("plan", "seats", "active"), (DType.string, DType.int64, DType.bool))
    )
    array, _ = parse_body({"inputs": [["pro", 3, True], ["free", 1.0, False]]}, schema)
    assert array.dtype == object
    assert array.tolist() == [["pro", 3, True], ["free", 1.0, False]]
    with pytest.raises(
        FeatureTypeMismatch, match=r"feature 'seats': expected int64, got number 1\.5"
    ):
        parse_body({"inputs": [["pro", 1.5, True]]}, schema)
    with pytest.raises(FeatureTypeMismatch, match="feature 'active': expected bool, got number 1"):
        parse_body({"inputs": [["pro", 1, 1]]}, schema)
    with pytest.raises(FeatureTypeMismatch, match="feature 'plan': expected string, got number"):
        parse_body({"inputs": [[7, 1, True]]}, schema)


def test_integer_features_give_an_integer_array_and_refuse_negatives_when_unsigned() -> None:
    schema = InputSchema.from_signature(signature(("a", "b"), (DType.int32, DType.uint8)))
    array, _ = parse_body({"inputs": [[1, 2]]}, schema)
    assert array.dtype == np.int64
    with pytest.raises(FeatureTypeMismatch, match="feature 'b': expected uint8"):
        parse_body({"inputs": [[1, -2]]}, schema)


@pytest.mark.parametrize(
    ("body", "error", "message"),
    [
        (
            {"inputs": [[1, 2]]},
            FeatureCountMismatch,
            r"row 0 has 2 values, expected 3 \('age', 'income', 'tenure'\)",
        ),
        (
            {"inputs": [[1, 2, 3], [1, 2, 3, 4]]},
            FeatureCountMismatch,
            "row 1 has 4 values, expected 3",
        ),
        ({"input": [1, 2, 3, 4]}, FeatureCountMismatch, "row 0 has 4 values"),
        (
            {"inputs": [[1, "2", 3]]},
            FeatureTypeMismatch,
            "row 0, feature 'income': expected float64, got string '2'",
        ),
        (
            {"inputs": [[1, True, 3]]},
            FeatureTypeMismatch,
            "feature 'income': expected float64, got boolean",
        ),
        (
            {"inputs": [[1, [2], 3]]},
            FeatureTypeMismatch,
            "feature 'income': expected float64, got array",
        ),
        (
            {"inputs": [{"age": 1, "tenure": 3}]},
            MissingFeatures,
            "record 0 lacks features 'income'",
        ),
        ({"inputs": {"age": [1], "tenure": [3]}}, MissingFeatures, "inputs lack features 'income'"),
        (
            {"inputs": {"age": [1], "income": [2, 3], "tenure": [3]}},
            InvalidInput,
            "different numbers of values",
        ),
        ({"dataframe_records": [{"age": 1}]}, MissingFeatures, "lacks features 'income', 'tenure'"),
        (
            {"dataframe_split": {"columns": ["age", "income"], "data": [[1, 2]]}},
            MissingFeatures,
            "columns lack features 'tenure'",
        ),
        (
            {"dataframe_split": {"columns": ["tenure", "age", "income"], "data": [[1, 2]]}},
            FeatureCountMismatch,
            "row 0 has 2 values but 3 columns",
        ),
        (
            {"dataframe_split": {"columns": "age", "data": [[1, 2, 3]]}},
            InvalidInput,
            "columns' must be an array",
        ),
        ({"dataframe_split": [[1, 2, 3]]}, InvalidInput, "'dataframe_split' must be an object"),
        ({"inputs": []}, InvalidInput, "'inputs' holds no rows"),
        ({"inputs": [1, 2, 3]}, InvalidInput, "array of rows .* for one row use 'input'"),
        ({"instances": "x"}, InvalidInput, "'instances' must be an array, got string"),
        ({"input": 3}, InvalidInput, "'input' must be one row"),
        ({"inputs": [[1, 2, 3]], "input": [1, 2, 3]}, InvalidInput, "both 'inputs' and 'input'"),
        ({"inputz": [[1, 2, 3]]}, InvalidInput, "unknown body member 'inputz'"),
        ({}, InvalidInput, "the body has none of"),
        ([[1, 2, 3]], InvalidInput, "must be a JSON object"),
        (
            {"inputs": [{"age": 1, "income": 2, "tenure": 3}, [1, 2, 3]]},
            InvalidInput,
            "record 1 is array",
        ),
        ({"inputs": [[1, 2, 3], {"age": 1}]}, InvalidInput, "row 1 is object"),
    ],
)
def test_every_refusal_names_what_is_wrong(body: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        parse_body(body, SCHEMA)


def test_without_a_signature_rows_pass_and_named_bodies_are_refused() -> None:
    array, _ = parse_body({"inputs": [[1, 2], [3, 4]]}, None)
    assert array.shape == (2, 2)
    with pytest.raises(InvalidInput, match="stored without a signature"):
        parse_body({"dataframe_records": [{"a": 1}]}, None)
    with pytest.raises(InvalidInput, match="different lengths"):
        parse_body({"inputs": [[1, 2], [3]]}, None)
