"""The compiled path: a version's `onnx` rendition, predicted by onnxruntime.

The client stores an ONNX rendering beside the joblib artifact at push (`berth.renditions`).
Serving uses it only after the version's stored example reproduces with it within tolerance;
the scikit-learn model (still verified, scanned and loaded as always) answers otherwise, and the
loaded version says which runtime answers and why (`/status`).

An ONNX file is a protobuf graph, not a pickle: loading it runs no code of the uploader's. Its
digest is still checked against the registry's record before onnxruntime reads it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from registry.schemas import Example

ONNX_FILE = "onnx"
"""The rendition's part name, as `berth.renditions` uploads it."""

RTOL = 1e-4
ATOL = 1e-5
"""Tolerance of the example check: onnxruntime computes in float32, scikit-learn in float64.
The absolute part scales with the largest expected output, so large targets compare fairly."""

_INPUT_DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64}

Method = Callable[[np.ndarray[Any, Any]], Any]


def available() -> bool:
    """Whether onnxruntime is installed (checked without importing it)."""
    return importlib.util.find_spec("onnxruntime") is not None


@dataclass(frozen=True, slots=True)
class OnnxPredictor:
    session: Any
    methods: Mapping[str, Method]


def _column(values: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    # skl2onnx's regressors answer (n, 1) where scikit-learn answers (n,).
    if values.ndim == 2 and values.shape[1] == 1:
        return values.ravel()
    return values


def load_onnx(path: Path) -> OnnxPredictor:
    """An onnxruntime session on one thread, with `predict` (and `predict_proba`). Blocking."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    # One serving process per core: intra-op threads would only contend with the event loop.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ValueError(f"the graph takes {len(inputs)} inputs; serving passes one table")
    dtype = _INPUT_DTYPES.get(inputs[0].type)
    if dtype is None:
        raise ValueError(f"the graph takes {inputs[0].type}; serving passes float tensors")
    feed = inputs[0].name
    outputs = [output.name for output in session.get_outputs()]
    run = session.run

    def output(name: str) -> Method:
        wanted = [name]

        def method(rows: np.ndarray[Any, Any]) -> Any:
            return _column(run(wanted, {feed: rows.astype(dtype, copy=False)})[0])

        return method

    methods = {"predict": output(outputs[0])}
    if "probabilities" in outputs:  # a classifier converted with zipmap=False
        methods["predict_proba"] = output("probabilities")
    return OnnxPredictor(session=session, methods=methods)


def tolerance(example: Example) -> tuple[float, float]:
    """(rtol, atol) for comparing onnxruntime's answers with the example's."""
    scale = 1.0
    for values in example.outputs.values():
        array = np.asarray(values)
        if array.dtype.kind in "iuf" and array.size:
            scale = max(scale, float(np.nanmax(np.abs(array))))
    return max(RTOL, example.rtol), max(ATOL * scale, example.atol)
