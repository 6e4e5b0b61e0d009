"""Download → verify digest → deserialise by flavor → run the stored example → a `LoadedModel`.

`load_model(path, flavor)` is the one seam where bytes become code: the pickle-opcode scan and
out-of-process loading (issue 5) and the ONNX path (issue 6) plug in there and nowhere else.
Nothing is deserialised before its sha256 matched the registry's record.
"""

from __future__ import annotations

import asyncio
import logging
import math
import statistics
import tempfile
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from registry.schemas import PRIMARY_FILE, Example, VersionOut
from safety import UnsafeArtifact
from serving.errors import LoadFailed, LoadStage, NotFound, RegistryUnavailable, ServingError
from serving.inputs import OUTPUT_METHODS, InputSchema, untyped_rows
from serving.onnx_runtime import ONNX_FILE, load_onnx, tolerance
from serving.onnx_runtime import available as onnx_available

logger = logging.getLogger(__name__)

Method = Callable[[np.ndarray[Any, Any]], Any]


class Predictor(Protocol):
    """A deserialised model: the output methods it offers, by name (a subset of OUTPUT_METHODS)."""

    @property
    def methods(self) -> Mapping[str, Method]: ...


@dataclass(frozen=True, slots=True)
class SklearnPredictor:
    estimator: Any
    methods: Mapping[str, Method]


class UnsupportedFlavor(Exception):
    pass


def predictor_of(estimator: Any) -> Predictor:
    """The output methods a deserialised estimator offers; TypeError when it cannot predict."""
    methods: dict[str, Method] = {}
    for name in OUTPUT_METHODS:
        # hasattr, not getattr with a default: sklearn's `available_if` raises AttributeError
        # for methods the fitted estimator lacks (predict_proba on a regressor pipeline).
        if hasattr(estimator, name):
            method = getattr(estimator, name)
            if callable(method):
                methods[name] = method
    if "predict" not in methods:
        raise TypeError(f"the artifact holds a {type(estimator).__name__}, which has no predict")
    return SklearnPredictor(estimator=estimator, methods=methods)


def _load_checked(flavor: str) -> Callable[[Path], Predictor]:
    def load(path: Path) -> Predictor:
        # Never a bare joblib.load: `safety` inspects first and its unpickler enforces the
        # allow-list again. `serving.isolation` adds the child process on top (the default).
        from safety.loading import load_artifact

        return predictor_of(load_artifact(path, flavor)[0])

    return load


FLAVORS: Mapping[str, Callable[[Path], Predictor]] = {
    "sklearn": _load_checked("sklearn"),
    "skops": _load_checked("skops"),
}


def load_model(path: Path, flavor: str) -> Predictor:
    """Deserialise a verified artifact. Blocking: call it in a worker thread."""
    loader = FLAVORS.get(flavor)
    if loader is None:
        raise UnsupportedFlavor(f"flavor '{flavor}' is not supported (known: {sorted(FLAVORS)})")
    return loader(path)


@dataclass(slots=True, eq=False)
class LoadedModel:
    """One version in memory, verified and warmed: what the predict path calls."""

    name: str
    version: int
    sha256: str
    flavor: str
    predictor: Predictor
    schema: InputSchema | None
    inline: bool
    """Predict on the event loop: warm-up showed a one-row call is cheaper than a thread hop."""
    load_seconds: float
    predict_seconds: float
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    runtime: str = "sklearn"
    """What predicts: `sklearn` (the deserialised artifact) or `onnx` (its ONNX rendition)."""
    runtime_note: str | None = None
    """Why an `onnx` rendition the version carries is not the one answering."""

    @property
    def methods(self) -> Mapping[str, Method]:
        return self.predictor.methods


class ArtifactSource(Protocol):
    """What the loader needs from the registry (the HTTP client implements it; tests fake it)."""

    async def version(self, name: str, version: int) -> VersionOut: ...

    async def download(
        self, name: str, version: int, dest: Path, *, max_bytes: int, file: str = PRIMARY_FILE
    ) -> tuple[str, int]: ...


_KIND_GROUPS = {"b": "bool", "i": "int", "u": "int", "f": "float", "U": "str", "S": "str"}


def _kind_of(values: np.ndarray[Any, Any]) -> str:
    if values.dtype.kind == "O" and all(isinstance(v, str) for v in values.flat):
        return "str"  # onnxruntime answers string labels as an object array
    return _KIND_GROUPS.get(values.dtype.kind, "object")


def outputs_match(
    actual: Any, expected: list[Any], *, rtol: float, atol: float, strict_kinds: bool = False
) -> str | None:
    """None when `actual` reproduces `expected` within tolerance, else what differs.

    `strict_kinds`: bools, integers, floats and strings must also stay what they were (an ONNX
    graph answering 0/1 where scikit-learn answered true/false would change the JSON).
    """
    got = np.asarray(actual)
    want = np.asarray(expected)
    if got.shape != want.shape:
        return f"shape {got.shape} differs from the expected {want.shape}"
    if strict_kinds and want.size:
        got_kind, want_kind = _kind_of(got), _kind_of(want)
        if got_kind != want_kind:
            return f"answers {got_kind} values where the example holds {want_kind} values"
    if got.dtype.kind in "biuf" and want.dtype.kind in "biuf":
        close = np.isclose(got.astype(np.float64), want.astype(np.float64), rtol=rtol, atol=atol)
        close |= np.isnan(got.astype(np.float64)) & np.isnan(want.astype(np.float64))
        if close.all():
            return None
        first = tuple(int(i) for i in np.argwhere(~close)[0])
        return (
            f"{int((~close).sum())} of {close.size} values differ; first at {list(first)}: "
            f"got {got[first]!r}, expected {want[first]!r}"
        )
    if got.tolist() == want.tolist():
        return None
    return f"labels differ: got {got.tolist()[:5]!r}, expected {want.tolist()[:5]!r}"


def _example_inputs(example: Example, schema: InputSchema | None) -> np.ndarray[Any, Any]:
    return schema.rows(example.inputs) if schema is not None else untyped_rows(example.inputs)


def _time_one_row(method: Method, row: np.ndarray[Any, Any]) -> float:
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        method(row)
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def check_example(
    predictor: Predictor,
    example: Example | None,
    schema: InputSchema | None,
    *,
    tolerance: tuple[float, float] | None = None,
    strict_kinds: bool = False,
) -> tuple[float, str | None]:
    """Run the stored example (warm-up and smoke test in one); return one-row predict seconds.

    The second value is None when every output reproduced, else why not. Blocking.
    """
    if example is not None:
        inputs = _example_inputs(example, schema)
        for method_name, expected in example.outputs.items():
            method = predictor.methods.get(method_name)
            if method is None:
                return math.inf, f"the example has '{method_name}' outputs; the model lacks it"
            rtol, atol = tolerance or (example.rtol, example.atol)
            why = outputs_match(
                method(inputs), expected, rtol=rtol, atol=atol, strict_kinds=strict_kinds
            )
            if why is not None:
                return math.inf, f"{method_name}: {why}"
        row = inputs[:1]
    elif schema is not None:
        row = np.zeros((1, len(schema.names)), dtype=schema.array_dtype)
        if schema.array_dtype == np.dtype(object):
            row[0] = ["" if k == "s" else 0 for k in schema.kinds]
    else:
        return math.inf, None  # nothing to warm up with: the first request is the warm-up
    return _time_one_row(predictor.methods["predict"], row), None


@dataclass(frozen=True, slots=True)
class LoaderOptions:
    download_dir: Path | None = None
    inline_max_seconds: float = 0.001
    max_artifact_bytes: int = 64 * 1024**3
    timeout_seconds: float = 300.0
    concurrency: int = 2
    """Loads at once: each holds an artifact on disk and a model being built in memory."""
    onnx: bool = True
    """Predict with a version's `onnx` rendition when it reproduces the example."""


class Loader:
    """Turns (model, version) into a verified, warmed `LoadedModel`, or raises.

    Raises `NotFound` when the registry has no such version, `LoadFailed` (with its stage) for
    everything else, transient when the registry or its store was unreachable.
    """

    def __init__(
        self,
        source: ArtifactSource,
        *,
        options: LoaderOptions,
        load: Callable[[Path, str], Predictor] = load_model,
        on_loaded: Callable[[LoadedModel], None] | None = None,
        on_failure: Callable[[LoadFailed], None] | None = None,
    ) -> None:
        self._source = source
        self._options = options
        self._load = load
        self._on_loaded = on_loaded
        self._on_failure = on_failure
        self._slots = asyncio.Semaphore(options.concurrency)

    async def load(self, name: str, version: int) -> LoadedModel:
        try:
            try:
                async with self._slots, asyncio.timeout(self._options.timeout_seconds):
                    loaded = await self._load_verified(name, version)
            except TimeoutError as exc:
                raise LoadFailed(
                    name,
                    version,
                    stage="other",
                    reason=f"not loaded within {self._options.timeout_seconds:g} s",
                    transient=True,
                ) from exc
        except LoadFailed as exc:
            logger.warning("%s", exc.message)
            if self._on_failure is not None:
                self._on_failure(exc)
            raise
        if self._on_loaded is not None:
            self._on_loaded(loaded)
        return loaded

    async def _load_verified(self, name: str, version: int) -> LoadedModel:
        started = time.perf_counter()
        try:
            meta = await self._source.version(name, version)
        except NotFound:
            raise
        except RegistryUnavailable as exc:
            raise LoadFailed(
                name, version, stage="download", reason=exc.message, transient=True
            ) from exc
        except ServingError as exc:
            raise LoadFailed(name, version, stage="download", reason=exc.message) from exc

        def fail(stage: LoadStage, reason: str, *, transient: bool = False) -> LoadFailed:
            return LoadFailed(name, version, stage=stage, reason=reason, transient=transient)

        with tempfile.TemporaryDirectory(
            prefix="berth-", dir=self._options.download_dir
        ) as staging:
            path = Path(staging) / "artifact"
            try:
                digest, size = await self._source.download(
                    name, version, path, max_bytes=min(meta.size, self._options.max_artifact_bytes)
                )
            except RegistryUnavailable as exc:
                raise fail("download", exc.message, transient=True) from exc
            except ServingError as exc:
                raise fail("download", exc.message) from exc
            if size != meta.size or digest != meta.sha256:
                # Checked before a single byte is deserialised: unpickling runs code.
                raise fail(
                    "digest",
                    f"artifact has sha256 {digest} ({size} bytes), the registry recorded "
                    f"{meta.sha256} ({meta.size} bytes)",
                )
            try:
                predictor = await asyncio.to_thread(self._load, path, meta.flavor)
            except UnsafeArtifact as exc:
                raise fail("inspect", exc.message) from exc
            except Exception as exc:
                raise fail("load", f"{type(exc).__name__}: {exc}") from exc

        schema = InputSchema.from_signature(meta.signature) if meta.signature else None
        try:
            one_row, why = await asyncio.to_thread(check_example, predictor, meta.example, schema)
        except ServingError as exc:
            raise fail("example", f"the example does not fit the signature: {exc.message}") from exc
        except Exception as exc:
            raise fail("example", f"{type(exc).__name__}: {exc}") from exc
        if why is not None:
            raise fail("example", f"the stored example does not reproduce: {why}")

        runtime, note = "sklearn", None
        if any(f.name == ONNX_FILE for f in meta.files):
            compiled, compiled_row, note = await self._compiled(meta, schema)
            if compiled is not None:
                predictor, one_row, runtime = compiled, compiled_row, "onnx"
            elif note is not None:
                logger.warning(
                    "model %s version %s: serving scikit-learn, not its onnx rendition: %s",
                    name,
                    version,
                    note,
                )

        loaded = LoadedModel(
            name=name,
            version=version,
            sha256=meta.sha256,
            flavor=meta.flavor,
            predictor=predictor,
            schema=schema,
            inline=one_row <= self._options.inline_max_seconds,
            load_seconds=time.perf_counter() - started,
            predict_seconds=one_row,
            runtime=runtime,
            runtime_note=note,
        )
        logger.info(
            "loaded model %s version %s in %.3f s (%s, one-row predict %.1f us, %s)",
            name,
            version,
            loaded.load_seconds,
            runtime,
            one_row * 1e6,
            "on the loop" if loaded.inline else "in a thread",
        )
        return loaded

    async def _compiled(
        self, meta: VersionOut, schema: InputSchema | None
    ) -> tuple[Predictor | None, float, str | None]:
        """The version's onnx rendition, verified and checked against the example, or why not.

        (predictor, one-row seconds, None) when it may answer; (None, inf, reason) otherwise.
        Never raises: the scikit-learn model is already loaded and answers instead.
        """
        if not self._options.onnx:
            return None, math.inf, "the onnx path is switched off (BERTH_ONNX=false)"
        if not onnx_available():
            return None, math.inf, "onnxruntime is not installed"
        if meta.example is None:
            return None, math.inf, "the version has no stored example to check the rendition by"
        record = next(f for f in meta.files if f.name == ONNX_FILE)
        with tempfile.TemporaryDirectory(
            prefix="berth-", dir=self._options.download_dir
        ) as staging:
            path = Path(staging) / ONNX_FILE
            try:
                digest, size = await self._source.download(
                    meta.model,
                    meta.version,
                    path,
                    max_bytes=min(record.size, self._options.max_artifact_bytes),
                    file=ONNX_FILE,
                )
            except ServingError as exc:
                return None, math.inf, f"the rendition could not be downloaded: {exc.message}"
            if size != record.size or digest != record.sha256:
                return (
                    None,
                    math.inf,
                    f"the rendition has sha256 {digest} ({size} bytes), the registry recorded "
                    f"{record.sha256} ({record.size} bytes); it was not loaded",
                )
            try:
                compiled = await asyncio.to_thread(load_onnx, path)
            except Exception as exc:
                return None, math.inf, f"onnxruntime cannot load it: {type(exc).__name__}: {exc}"
        try:
            one_row, why = await asyncio.to_thread(
                check_example,
                compiled,
                meta.example,
                schema,
                tolerance=tolerance(meta.example),
                strict_kinds=True,
            )
        except Exception as exc:
            return None, math.inf, f"the example fails with it: {type(exc).__name__}: {exc}"
        if why is not None:
            return None, math.inf, f"the stored example does not reproduce with it: {why}"
        return compiled, one_row, None


@dataclass(frozen=True, slots=True)
class FailureRecord:
    model: str
    version: int
    stage: LoadStage
    message: str
    transient: bool
    at: datetime


class FailureLog:
    """The most recent load failures, newest last: shown in /status and sent in heartbeats."""

    def __init__(self, size: int = 100) -> None:
        self._records: deque[FailureRecord] = deque(maxlen=size)

    def record(self, failure: LoadFailed) -> FailureRecord:
        entry = FailureRecord(
            model=failure.model,
            version=failure.version,
            stage=failure.stage,
            message=failure.reason[:2000],
            transient=failure.transient,
            at=datetime.now(UTC),
        )
        self._records.append(entry)
        return entry

    def recent(self) -> list[FailureRecord]:
        return list(self._records)
