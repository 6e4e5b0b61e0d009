"""Renditions `push` adds beside the joblib artifact: an ONNX rendering, where one converts.

Serving predicts with onnxruntime from it once it reproduces the version's example (a
RandomForest answers one row in microseconds instead of milliseconds). A model skl2onnx cannot
convert is pushed without it: a rendition is an optimisation, never a reason for a push to fail.
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from berth.packaging import FilePart

logger = logging.getLogger(__name__)

ONNX_PART = "onnx"


def skl2onnx_available() -> bool:
    """Checked without importing skl2onnx, which takes a second: `berth` stays quick to start."""
    return importlib.util.find_spec("skl2onnx") is not None


def _width(estimator: Any, sample: np.ndarray[Any, Any] | None) -> int | None:
    if sample is not None:
        return int(sample.shape[1])
    width = getattr(estimator, "n_features_in_", None)
    return int(width) if isinstance(width, int | np.integer) else None


def onnx_rendition(
    estimator: Any, sample: np.ndarray[Any, Any] | None, workdir: Path
) -> FilePart | None:
    """`model.onnx` taking a float32 table, or None (logged) when the estimator does not convert.

    Classifiers convert with `zipmap=False`, so probabilities come out as a plain array.
    """
    from berth.packaging import FilePart

    width = _width(estimator, sample)
    if width is None:
        logger.info("no ONNX rendition: the number of features is unknown")
        return None
    try:
        from skl2onnx import to_onnx
        from sklearn.base import is_classifier

        probe = (
            np.asarray(sample[:1], dtype=np.float32)
            if sample is not None
            else np.zeros((1, width), dtype=np.float32)
        )
        with warnings.catch_warnings():
            # The converter's own deprecation chatter is not the caller's concern.
            warnings.simplefilter("ignore")
            options = {"zipmap": False} if is_classifier(estimator) else None
            graph = to_onnx(estimator, probe, options=options)
        path = workdir / "model.onnx"
        path.write_bytes(graph.SerializeToString())
    except Exception as exc:
        logger.info(
            "no ONNX rendition for this %s: %s: %s",
            type(estimator).__name__,
            type(exc).__name__,
            str(exc)[:300],
        )
        return None
    return FilePart(ONNX_PART, path)
