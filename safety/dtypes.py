"""What a pickled `numpy.dtype` denotes: its item size and whether it holds Python objects.

joblib decides how many raw bytes follow an array wrapper (or whether a nested pickle does) from
the dtype's `itemsize` and `hasobject`, so the scanner must know them exactly as numpy will. It
does not run numpy's `__setstate__` on the stream's values; it rebuilds the dtype through numpy's
public constructors from the description, then requires that numpy's own pickling of that dtype
is exactly what the stream holds. Anything numpy would not have written is refused, so the two
readings cannot differ.
"""

from __future__ import annotations

import re
from typing import Any, NoReturn

import numpy as np

from safety.errors import Reason, UnsafeArtifact
from safety.pickles import NUMPY_DTYPE, OPAQUE, Instance, _Dict, _List

_CODE = re.compile(r"^[a-zA-Z]\d{0,9}$")
_UNIT = re.compile(rb"[a-zA-Z]{1,3}")
_NPY_ALIGNED_STRUCT = 0x80
_MAX_DEPTH = 16


def _refuse(why: str) -> NoReturn:
    raise UnsafeArtifact(
        f"a numpy dtype the scanner cannot pin down: {why}", reason=Reason.unsafe_construct
    )


def describe(dtype: Instance) -> tuple[int, bool]:
    """(itemsize, hasobject) of the dtype `dtype` denotes; raises `UnsafeArtifact` if unsure."""
    value = _materialise(dtype, 0)
    return value.itemsize, bool(value.hasobject)


def _materialise(instance: Any, depth: int) -> np.dtype[Any]:
    if depth > _MAX_DEPTH:
        _refuse("nested too deep")
    if not isinstance(instance, Instance) or instance.cls.key != NUMPY_DTYPE:
        _refuse("a field or base that is not a numpy.dtype")
    cached = instance.numpy_dtype
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    args, state = instance.args, instance.state
    if (
        args is None
        or len(args) != 3
        or type(args[0]) is not str
        or type(args[1]) is not bool
        or type(args[2]) is not bool
        or not _CODE.fullmatch(args[0])
    ):
        _refuse(f"constructor arguments {args!r}")
    if not isinstance(state, tuple) or len(state) not in (8, 9):
        _refuse("its state is not numpy's")
    try:
        candidate = _candidate(args[0], state, depth)
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError) as exc:
        _refuse(str(exc))
    if _canonical_numpy(candidate) != _canonical_pickled(instance, depth):
        _refuse(f"{candidate!r} is not pickled that way by numpy")
    instance.numpy_dtype = candidate
    return candidate


def _candidate(code: str, state: tuple[Any, ...], depth: int) -> np.dtype[Any]:
    _version, endian, sub, names, fields, elsize, _alignment, flags = state[:8]
    if names is not None:
        if not isinstance(names, tuple) or not isinstance(fields, _Dict) or fields.dropped:
            _refuse("structured fields it cannot follow")
        formats, offsets, titles = [], [], []
        for name in names:
            entry = fields[name]
            if not isinstance(entry, tuple) or len(entry) not in (2, 3):
                _refuse(f"field {name!r}")
            formats.append(_materialise(entry[0], depth + 1))
            offsets.append(entry[1])
            titles.append(entry[2] if len(entry) == 3 else None)
        spec: dict[str, Any] = {
            "names": list(names),
            "formats": formats,
            "offsets": offsets,
            "itemsize": elsize,
        }
        if any(t is not None for t in titles):
            spec["titles"] = titles
        aligned = bool(flags & _NPY_ALIGNED_STRUCT)
        return np.dtype(spec, align=aligned)  # type: ignore[call-overload,no-any-return]
    if sub is not None:
        if not isinstance(sub, tuple) or len(sub) != 2:
            _refuse("a sub-array it cannot follow")
        return np.dtype((_materialise(sub[0], depth + 1), sub[1]))
    text = code
    if len(state) == 9 and state[8] is not None:
        unit = _datetime_unit(state[8])
        text = f"{code}[{unit}]"
    if endian in ("<", ">"):
        text = endian + text
    return np.dtype(text)


def _datetime_unit(metadata: Any) -> str:
    if not (isinstance(metadata, tuple) and len(metadata) == 2 and isinstance(metadata[1], tuple)):
        _refuse("datetime metadata it cannot follow")
    unit, count = metadata[1][0], metadata[1][1]
    if type(unit) is not bytes or type(count) is not int or not _UNIT.fullmatch(unit):
        _refuse("datetime metadata it cannot follow")
    return f"{count if count != 1 else ''}{unit.decode()}"


def _canonical_numpy(value: Any) -> Any:
    if isinstance(value, np.dtype):
        reduced = value.__reduce__()
        if not isinstance(reduced, tuple) or reduced[0] is not np.dtype:
            _refuse(f"{value!r} does not pickle as a plain numpy.dtype")
        return ("dtype", _canonical_numpy(reduced[1]), _canonical_numpy(reduced[2]))
    if isinstance(value, tuple):
        return tuple(_canonical_numpy(v) for v in value)
    if isinstance(value, dict):
        return {k: _canonical_numpy(v) for k, v in value.items()}
    return (type(value).__name__, value)


def _canonical_pickled(value: Any, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        _refuse("nested too deep")
    if isinstance(value, Instance):
        if value.cls.key != NUMPY_DTYPE:
            _refuse("an object inside a dtype's state")
        return (
            "dtype",
            _canonical_pickled(value.args, depth + 1),
            _canonical_pickled(value.state, depth + 1),
        )
    if isinstance(value, tuple):
        return tuple(_canonical_pickled(v, depth + 1) for v in value)
    if isinstance(value, _Dict):
        if value.dropped:
            _refuse("a dictionary too large to follow")
        return {k: _canonical_pickled(v, depth + 1) for k, v in value.items()}
    if value is OPAQUE or isinstance(value, _List):
        _refuse("a value it cannot follow")
    return (type(value).__name__, value)
