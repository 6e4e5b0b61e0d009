from __future__ import annotations

import json

import numpy as np

from serving.service import encode


def test_numbers_encode_as_json_and_non_finite_values_as_null() -> None:
    assert json.loads(encode(np.array([1.5, 2.0]))) == [1.5, 2.0]
    assert json.loads(encode(np.array([[1.0, np.nan], [-np.inf, np.inf]]))) == [
        [1.0, None],
        [None, None],
    ]
    assert json.loads(encode(np.array([1, 2], dtype=np.int64))) == [1, 2]
    assert json.loads(encode(np.array([True, False]))) == [True, False]


def test_labels_of_any_numpy_type_encode() -> None:
    labels = np.array(["churn", np.int64(3), np.float32(0.5)], dtype=object)
    assert json.loads(encode(labels)) == ["churn", 3, 0.5]
    assert json.loads(encode(np.array(["a", "b"]))) == ["a", "b"]
