"""Request bodies → one 2-D numpy array in the column order of the version's signature.

Hot path: a predict request is parsed once by `json.loads` and then checked here with plain
loops over Python values; no pydantic model is built per request. Every refusal is an
`InvalidInput` naming the row, the feature and what was expected.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from registry.schemas import DType, Signature
from serving.errors import (
    FeatureCountMismatch,
    FeatureTypeMismatch,
    InvalidInput,
    MissingFeatures,
    UnsupportedOutput,
)

OUTPUT_METHODS: Final = ("predict", "predict_proba", "predict_log_proba", "decision_function")
"""The only estimator methods a request may ask for: a body never names an arbitrary attribute."""

DEFAULT_OUTPUTS: Final = ("predict",)

INPUT_KEYS: Final = ("inputs", "instances", "dataframe_split", "dataframe_records", "input")

_KIND: Final[Mapping[DType, str]] = {
    DType.bool: "b",
    DType.int8: "i",
    DType.int16: "i",
    DType.int32: "i",
    DType.int64: "i",
    DType.uint8: "u",
    DType.uint16: "u",
    DType.uint32: "u",
    DType.uint64: "u",
    DType.float16: "f",
    DType.float32: "f",
    DType.float64: "f",
    DType.string: "s",
}

_MAX_NAMES_IN_MESSAGE: Final = 20


def json_type(value: Any) -> str:
    """The JSON word for a parsed value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _fits(kind: str, value: Any) -> bool:
    kind_of = type(value)
    if kind == "f":
        # null is a missing value (NaN): JSON cannot spell NaN, and estimators such as
        # HistGradientBoosting accept it.
        return kind_of is float or kind_of is int or value is None
    if kind == "i":
        return kind_of is int or (kind_of is float and value.is_integer())
    if kind == "u":
        return (kind_of is int or (kind_of is float and value.is_integer())) and value >= 0
    if kind == "b":
        return kind_of is bool
    return kind_of is str


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:_MAX_NAMES_IN_MESSAGE])
    more = len(names) - _MAX_NAMES_IN_MESSAGE
    return shown + (f" and {more} more" if more > 0 else "")


@dataclass(frozen=True, slots=True)
class InputSchema:
    """A signature compiled for the hot path: per-feature kinds and the array dtype."""

    names: tuple[str, ...]
    dtypes: tuple[DType, ...]
    kinds: tuple[str, ...]
    index: Mapping[str, int]
    array_dtype: np.dtype[Any]
    all_float: bool

    @classmethod
    def from_signature(cls, signature: Signature) -> InputSchema:
        dtypes = tuple(f.dtype for f in signature.inputs)
        kinds = tuple(_KIND[d] for d in dtypes)
        kind_set = set(kinds)
        array_dtype: np.dtype[Any]
        if "s" in kind_set:
            array_dtype = np.dtype(object)
        elif kind_set == {"b"}:
            array_dtype = np.dtype(bool)
        elif kind_set <= {"i", "u"}:
            array_dtype = np.dtype(np.int64)
        else:
            array_dtype = np.dtype(np.float64)
        names = tuple(f.name for f in signature.inputs)
        return cls(
            names=names,
            dtypes=dtypes,
            kinds=kinds,
            index={n: i for i, n in enumerate(names)},
            array_dtype=array_dtype,
            all_float=kind_set == {"f"},
        )

    # --- shapes ---------------------------------------------------------------------------

    def rows(self, rows: Sequence[Any]) -> np.ndarray[Any, Any]:
        """Rows of values in signature order → array; refuses wrong counts and wrong types."""
        width = len(self.names)
        if self.all_float:
            # The common case (numeric features only) gets the tightest loop we can write.
            for i, row in enumerate(rows):
                if (type(row) is not list and type(row) is not tuple) or len(row) != width:
                    self._bad_row(i, row)
                for value in row:
                    kind_of = type(value)
                    if kind_of is not float and kind_of is not int and value is not None:
                        self._bad_cell(i, row)
        else:
            kinds = self.kinds
            for i, row in enumerate(rows):
                if (type(row) is not list and type(row) is not tuple) or len(row) != width:
                    self._bad_row(i, row)
                for kind, value in zip(kinds, row, strict=True):
                    if not _fits(kind, value):
                        self._bad_cell(i, row)
        try:
            return np.array(rows, dtype=self.array_dtype)
        except (OverflowError, ValueError) as exc:
            raise InvalidInput(f"inputs do not fit {self.array_dtype}: {exc}") from exc

    def records(self, records: Sequence[Any]) -> np.ndarray[Any, Any]:
        """Objects keyed by feature name → array; refuses missing features (extra keys ignored)."""
        names = self.names
        rows: list[list[Any]] = []
        for i, record in enumerate(records):
            if type(record) is not dict:
                raise InvalidInput(
                    f"record {i} is {json_type(record)}, expected an object keyed by feature name",
                    detail={"row": i},
                )
            try:
                rows.append([record[n] for n in names])
            except KeyError:
                missing = [n for n in names if n not in record]
                raise MissingFeatures(
                    f"record {i} lacks features {_names(missing)}",
                    detail={"row": i, "missing": missing},
                ) from None
        return self.rows(rows)

    def columns(self, columns: Sequence[Any], data: Sequence[Any]) -> np.ndarray[Any, Any]:
        """A split dataframe (column names + rows) → array, reordered to the signature."""
        if list(columns) == list(self.names):
            return self.rows(data)
        position = {c: i for i, c in enumerate(columns) if isinstance(c, str)}
        missing = [n for n in self.names if n not in position]
        if missing:
            raise MissingFeatures(
                f"columns lack features {_names(missing)}", detail={"missing": missing}
            )
        picks = [position[n] for n in self.names]
        width = len(columns)
        rows: list[list[Any]] = []
        for i, row in enumerate(data):
            if type(row) is not list or len(row) != width:
                raise FeatureCountMismatch(
                    f"row {i} has {_count(row)} values but {width} columns were named",
                    detail={"row": i, "expected": width, "got": _count(row)},
                )
            rows.append([row[p] for p in picks])
        return self.rows(rows)

    def column_map(self, columns: Mapping[str, Any]) -> np.ndarray[Any, Any]:
        """`{"feature": [values...], ...}` → array."""
        missing = [n for n in self.names if n not in columns]
        if missing:
            raise MissingFeatures(
                f"inputs lack features {_names(missing)}", detail={"missing": missing}
            )
        values = [columns[n] for n in self.names]
        for name, column in zip(self.names, values, strict=True):
            if type(column) is not list:
                raise InvalidInput(
                    f"feature '{name}' is {json_type(column)}, expected an array of values",
                    detail={"feature": name},
                )
        lengths = {len(c) for c in values}
        if len(lengths) != 1:
            raise InvalidInput("features have different numbers of values", detail={})
        return self.rows([list(r) for r in zip(*values, strict=True)])

    # --- refusals (cold path) ---------------------------------------------------------------

    def _bad_row(self, i: int, row: Any) -> None:
        width = len(self.names)
        if type(row) is not list and type(row) is not tuple:
            raise InvalidInput(
                f"row {i} is {json_type(row)}, expected an array of {width} values",
                detail={"row": i},
            )
        raise FeatureCountMismatch(
            f"row {i} has {len(row)} values, expected {width} ({_names(self.names)})",
            detail={"row": i, "expected": width, "got": len(row)},
        )

    def _bad_cell(self, i: int, row: Sequence[Any]) -> None:
        for name, dtype, kind, value in zip(self.names, self.dtypes, self.kinds, row, strict=True):
            if not _fits(kind, value):
                shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
                raise FeatureTypeMismatch(
                    f"row {i}, feature '{name}': expected {dtype.value}, got {json_type(value)} "
                    f"{shown}",
                    detail={
                        "row": i,
                        "feature": name,
                        "expected": dtype.value,
                        "got": json_type(value),
                    },
                )
        raise AssertionError("unreachable: _bad_cell called on a row that fits")  # pragma: no cover


def _count(row: Any) -> int | str:
    return len(row) if isinstance(row, list) else json_type(row)


def untyped_rows(rows: Sequence[Any]) -> np.ndarray[Any, Any]:
    """Rows for a version stored without a signature: only the shape can be checked."""
    for i, row in enumerate(rows):
        if type(row) is not list:
            raise InvalidInput(f"row {i} is {json_type(row)}, expected an array", detail={"row": i})
    try:
        array = np.array(rows)
    except ValueError as exc:
        raise InvalidInput("rows have different lengths", detail={}) from exc
    if array.ndim != 2 or array.dtype.kind not in "biufU":
        raise InvalidInput("rows must hold only numbers, booleans or strings", detail={})
    return array


def _no_names(what: str) -> InvalidInput:
    return InvalidInput(
        f"{what} need feature names, and this version was stored without a signature; send rows",
        detail={},
    )


def parse_outputs(value: Any) -> tuple[str, ...]:
    if type(value) is not list or not value or not all(type(v) is str for v in value):
        raise InvalidInput(
            "'outputs' must be a non-empty array of method names",
            detail={"allowed": OUTPUT_METHODS},
        )
    unknown = [v for v in value if v not in OUTPUT_METHODS]
    if unknown:
        raise UnsupportedOutput(
            f"unknown outputs {_names(unknown)}; allowed: {_names(OUTPUT_METHODS)}",
            detail={"unknown": unknown, "allowed": list(OUTPUT_METHODS)},
        )
    return tuple(dict.fromkeys(value))


def _items(key: str, value: Any) -> list[Any]:
    if type(value) is not list:
        raise InvalidInput(f"'{key}' must be an array, got {json_type(value)}", detail={"key": key})
    if not value:
        raise InvalidInput(f"'{key}' holds no rows", detail={"key": key})
    return value


def to_array(key: str, value: Any, schema: InputSchema | None) -> np.ndarray[Any, Any]:
    """One input member of a body → the 2-D array the model gets."""
    if key == "inputs" or key == "instances":
        if key == "inputs" and type(value) is dict:
            if schema is None:
                raise _no_names("column inputs")
            return schema.column_map(value)
        items = _items(key, value)
        first = items[0]
        if type(first) is dict:
            if schema is None:
                raise _no_names("records")
            return schema.records(items)
        if type(first) is not list:
            raise InvalidInput(
                f"'{key}' must be an array of rows (arrays) or records (objects); for one row "
                "use 'input'",
                detail={"key": key},
            )
        return schema.rows(items) if schema is not None else untyped_rows(items)
    if key == "input":
        if type(value) is dict:
            if schema is None:
                raise _no_names("records")
            return schema.records([value])
        if type(value) is not list:
            raise InvalidInput(f"'input' must be one row (an array), got {json_type(value)}")
        return schema.rows([value]) if schema is not None else untyped_rows([value])
    if key == "dataframe_records":
        items = _items(key, value)
        if schema is None:
            raise _no_names("dataframe_records")
        return schema.records(items)
    # dataframe_split
    if type(value) is not dict:
        raise InvalidInput(f"'dataframe_split' must be an object, got {json_type(value)}")
    data = _items("dataframe_split.data", value.get("data"))
    columns = value.get("columns")
    if columns is None:
        return schema.rows(data) if schema is not None else untyped_rows(data)
    if type(columns) is not list:
        raise InvalidInput("'dataframe_split.columns' must be an array of names")
    if schema is None:
        return untyped_rows(data)
    return schema.columns(columns, data)


def parse_body(
    payload: Any, schema: InputSchema | None
) -> tuple[np.ndarray[Any, Any], tuple[str, ...]]:
    """A parsed JSON body → (2-D input array, requested output methods)."""
    if type(payload) is not dict:
        raise InvalidInput(
            f"the body must be a JSON object with one of {_names(INPUT_KEYS)}, got "
            f"{json_type(payload)}",
            detail={"accepted": list(INPUT_KEYS)},
        )
    found: str | None = None
    outputs: tuple[str, ...] = DEFAULT_OUTPUTS
    for key in payload:
        if key in INPUT_KEYS:
            if found is not None:
                raise InvalidInput(
                    f"the body has both '{found}' and '{key}'; give exactly one",
                    detail={"accepted": list(INPUT_KEYS)},
                )
            found = key
        elif key == "outputs":
            outputs = parse_outputs(payload[key])
        else:
            raise InvalidInput(
                f"unknown body member '{key}'; expected one of {_names(INPUT_KEYS)} and "
                "optionally 'outputs'",
                detail={"unknown": key, "accepted": [*INPUT_KEYS, "outputs"]},
            )
    if found is None:
        raise InvalidInput(
            f"the body has none of {_names(INPUT_KEYS)}", detail={"accepted": list(INPUT_KEYS)}
        )
    return to_array(found, payload[found], schema), outputs
