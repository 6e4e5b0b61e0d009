"""A fitted estimator → the files and metadata of one upload.

`package(...)` serialises the estimator with joblib and describes it the way serving needs: the
signature (feature names and dtypes), an example (sample rows and the model's own answers, which
serving replays before a version takes traffic) and the training environment.

More renditions of the same model (an ONNX export, say) plug in as `Rendition` functions: each
gets the estimator and the sample and may add one file part to the upload.
"""

from __future__ import annotations

import platform
import stat
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from berth.errors import InvalidInput
from berth.renditions import onnx_rendition, skl2onnx_available
from registry.schemas import (
    PRIMARY_FILE,
    DType,
    Example,
    FeatureSpec,
    Lineage,
    Signature,
    VersionMetadata,
)

EXAMPLE_ROWS = 5
"""Sample rows kept as the example: enough to catch a broken load, small enough to replay."""

EXAMPLE_OUTPUTS = ("predict", "predict_proba")

_KIND_TO_DTYPE: Mapping[str, DType] = {"U": DType.string, "S": DType.string, "O": DType.string}


@dataclass(frozen=True, slots=True)
class FilePart:
    """One file of an upload, sent as the multipart part `name` (`artifact`, `onnx`, ...)."""

    name: str
    path: Path
    media_type: str = "application/octet-stream"

    @property
    def size(self) -> int:
        return self.path.stat().st_size


@dataclass(slots=True)
class Package:
    """What one `push` sends: the metadata part, then the primary artifact, then renditions."""

    metadata: VersionMetadata
    files: list[FilePart] = field(default_factory=list)


Rendition = Callable[[Any, "np.ndarray[Any, Any] | None", Path], FilePart | None]
"""(estimator, sample or None, a scratch directory) → an extra file part, or None to skip."""

RENDITIONS: list[Rendition] = [onnx_rendition] if skl2onnx_available() else []
"""Renditions every `push` of an estimator tries; append to add one for all callers. The ONNX
rendering is one by default (serving predicts with onnxruntime from it where it reproduces)."""


FLAVOR_BY_SUFFIX: Mapping[str, str] = {".skops": "skops"}
"""Artifact files whose name says their flavor; any other is `sklearn` (joblib or pickle)."""


def flavor_of(path: Path) -> str:
    """The flavor an artifact file's name implies: `skops` for `.skops`, else `sklearn`."""
    return FLAVOR_BY_SUFFIX.get(path.suffix.lower(), "sklearn")


def readable_file(path: Path) -> Path:
    """`path`, if it is a regular file this process can open; else `InvalidInput` naming it and
    saying why (missing, a directory, a device, unreadable)."""
    try:
        mode = path.stat().st_mode
        if stat.S_ISREG(mode):
            path.open("rb").close()
    except FileNotFoundError:
        raise InvalidInput(f"no such file: {path}", detail={"path": str(path)}) from None
    except OSError as exc:
        raise InvalidInput(
            f"cannot read {path}: {exc.strerror or exc}", detail={"path": str(path)}
        ) from exc
    if stat.S_ISDIR(mode):
        raise InvalidInput(f"{path} is a directory, not a file", detail={"path": str(path)})
    if not stat.S_ISREG(mode):
        raise InvalidInput(f"{path} is not a regular file", detail={"path": str(path)})
    return path


def load_estimator(path: Path) -> Any:
    """The model a joblib (or pickle) file holds, or `InvalidInput` naming the file.

    Only for the user's own file on the user's own machine (the same trust as the script that
    wrote it): this runs the pickle's code. Serving never loads artifacts this way.
    """
    import joblib

    readable_file(path)
    try:
        return joblib.load(path)
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror or exc}") from exc
    except Exception as exc:
        # Unpickling bytes that are not a pickle fails with whatever they trip over (KeyError,
        # UnpicklingError, EOFError, a module not installed here, ...): no narrower class says
        # "this file is not a model that loads here", and each means exactly that.
        raise InvalidInput(
            f"{path} does not load as a joblib/pickle model ({type(exc).__name__}: {exc})",
            detail={"path": str(path)},
        ) from exc


def environment() -> dict[str, str]:
    """The versions a model was trained with, for `lineage.environment`."""
    found = {"python": platform.python_version()}
    for distribution in ("scikit-learn", "numpy", "joblib"):
        try:
            found[distribution] = importlib_metadata.version(distribution)
        except importlib_metadata.PackageNotFoundError:
            continue
    return found


def as_array(sample: Any) -> np.ndarray[Any, Any]:
    """Rows as a 2-D array: lists of rows, numpy arrays, or a dataframe (`to_numpy()`)."""
    if hasattr(sample, "to_numpy") and hasattr(sample, "columns"):
        sample = sample.to_numpy()
    array = np.asarray(sample)
    if array.ndim == 1:
        array = array.reshape(1, -1)
    if array.ndim != 2 or array.shape[0] == 0:
        raise InvalidInput(f"the sample must be a non-empty table of rows, not shape {array.shape}")
    return array


def dtype_of(dtype: np.dtype[Any]) -> DType:
    if dtype.kind in _KIND_TO_DTYPE:
        return _KIND_TO_DTYPE[dtype.kind]
    try:
        return DType(dtype.name)
    except ValueError:
        raise InvalidInput(f"the sample has dtype {dtype}, which a signature cannot hold") from None


def _object_column(values: Sequence[Any]) -> DType:
    """A column of Python objects: bools, numbers (None is a missing number) or strings."""
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool | np.bool_) for v in present):
        return DType.bool
    if all(isinstance(v, int | float | np.number) and not isinstance(v, bool) for v in present):
        return DType.float64
    return DType.string


def _column_dtypes(sample: Any, array: np.ndarray[Any, Any]) -> list[DType]:
    """Per-column dtypes: a dataframe's own `dtypes`, else inferred from the array."""
    dtypes = getattr(sample, "dtypes", None)
    if hasattr(sample, "columns") and dtypes is not None and not isinstance(dtypes, np.dtype):
        found = [dtype_of(np.dtype(d)) for d in list(dtypes)]
        if len(found) == array.shape[1]:
            return found
    if array.dtype.kind == "O":
        return [_object_column(array[:, i].tolist()) for i in range(array.shape[1])]
    return [dtype_of(array.dtype)] * array.shape[1]


def signature_of(estimator: Any, sample: Any = None) -> Signature | None:
    """The input schema: names from `feature_names_in_` when fitted on named columns, else f0..fN;
    dtypes from the sample, else float64. None when neither says how many features there are."""
    names_in = getattr(estimator, "feature_names_in_", None)
    array = as_array(sample) if sample is not None else None
    width = getattr(estimator, "n_features_in_", None)
    if names_in is not None:
        names = [str(n) for n in names_in]
    elif isinstance(width, int | np.integer):
        names = [f"f{i}" for i in range(int(width))]
    elif array is not None:
        names = [f"f{i}" for i in range(array.shape[1])]
    else:
        return None
    if array is not None and array.shape[1] != len(names):
        raise InvalidInput(
            f"the sample has {array.shape[1]} columns; the model expects {len(names)}",
            detail={"sample_columns": array.shape[1], "features": len(names)},
        )
    dtypes = _column_dtypes(sample, array) if array is not None else [DType.float64] * len(names)
    return Signature(
        inputs=[FeatureSpec(name=n, dtype=d) for n, d in zip(names, dtypes, strict=True)],
        named=names_in is not None,
    )


def _is_classifier(estimator: Any) -> bool:
    from sklearn.base import is_classifier

    return bool(is_classifier(estimator))


def example_of(estimator: Any, sample: Any, *, rows: int = EXAMPLE_ROWS) -> Example:
    """The first `rows` sample rows and what the model answers for them: `predict`, plus
    `predict_proba` for classifiers."""
    array = as_array(sample)[:rows]
    methods = ["predict"]
    if _is_classifier(estimator) and hasattr(estimator, "predict_proba"):
        methods.append("predict_proba")
    outputs: dict[str, list[Any]] = {}
    with warnings.catch_warnings():
        # An estimator fitted on named columns warns on a bare array; serving calls it the same
        # way, so the answers recorded here are the ones serving will reproduce.
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        for method in methods:
            try:
                outputs[method] = np.asarray(getattr(estimator, method)(array)).tolist()
            except (ValueError, TypeError) as exc:
                raise InvalidInput(f"the model's {method} rejected the sample: {exc}") from exc
    return Example(inputs=array.tolist(), outputs=outputs)


def describe(
    estimator: Any,
    sample: Any = None,
    *,
    flavor: str = "sklearn",
    metrics: Mapping[str, float] | None = None,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    description: str = "",
    lineage: Lineage | None = None,
) -> VersionMetadata:
    """The metadata of an upload (everything but the digest).

    With an estimator: its signature, the example from `sample` and this environment's versions
    (the estimator was trained here, or at least loads here). With None (an artifact uploaded
    as is): only what the caller says.
    """
    values: dict[str, Any] = {
        "flavor": flavor,
        "metrics": dict(metrics or {}),
        "params": dict(params or {}),
        "tags": dict(tags or {}),
        "description": description,
        "lineage": lineage,
    }
    if estimator is not None:
        if not hasattr(estimator, "predict"):
            raise InvalidInput(
                f"a {type(estimator).__name__} has no predict(); is it a fitted model?"
            )
        lineage = lineage or Lineage()
        values["lineage"] = lineage.model_copy(
            update={"environment": environment() | dict(lineage.environment)}
        )
        values["signature"] = signature_of(estimator, sample)
        values["example"] = example_of(estimator, sample) if sample is not None else None
    try:
        return VersionMetadata.model_validate(values)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidInput(
            f"the version's metadata is not valid: {where}: {first['msg']}",
            detail=exc.errors(include_url=False, include_context=False),
        ) from exc


def package(
    estimator: Any,
    workdir: Path,
    *,
    sample: Any = None,
    renditions: Sequence[Rendition] | None = None,
    **describe_args: Any,
) -> Package:
    """Serialise `estimator` into `workdir` and describe it; renditions add their own parts."""
    import joblib

    metadata = describe(estimator, sample, **describe_args)
    path = workdir / "model.joblib"
    joblib.dump(estimator, path)
    files = [FilePart(PRIMARY_FILE, path)]
    array = as_array(sample) if sample is not None else None
    for rendition in RENDITIONS if renditions is None else renditions:
        extra = rendition(estimator, array, workdir)
        if extra is not None:
            files.append(extra)
    return Package(metadata=metadata, files=files)
