"""The predict path: resolve the version, parse the body, call the model, encode the answer.

It touches only memory: the routing table (one reference read per request), the model cache,
and counters. The registry is called only to load a pinned version on its first use; a version
that failed for good, or that the registry lacks, is refused from memory for a while after.

Every protocol (Berth's own JSON, the Open Inference Protocol, KServe V1, MLflow's scoring
bodies) runs through `infer_alias` / `infer_version` with its own `decode` and `encode`, so
routing, sticky A/B keys, shadows, metrics, logs and spans are the same whatever the client
speaks. `decode` runs once the answering version is known, because parsing needs its signature.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

import numpy as np

from registry.schemas import NAME_PATTERN
from serving.batching import Batcher, call_all
from serving.cache import ModelCache, Refusals
from serving.errors import (
    AliasNotFound,
    LoadFailed,
    MalformedBody,
    ModelNotFound,
    ModelUnavailable,
    NotFound,
    PredictionFailed,
    PredictionRejected,
    ServingError,
    UnsupportedOutput,
    VersionNotFound,
)
from serving.inputs import DEFAULT_OUTPUTS, parse_body, parse_csv
from serving.limits import check_json
from serving.loader import LoadedModel
from serving.metrics import EndpointMetrics, ServingMetrics
from serving.observability import PredictLog, Spans
from serving.routing import Router
from serving.shadow import Shadower

logger = logging.getLogger(__name__)

MAX_VERSION = 2**31 - 1
"""The largest version number the registry's contract allows (`registry.schemas.VersionNumber`)."""

NOT_FOUND_SECONDS = 5.0
"""How long a pinned version the registry lacks is refused from memory: briefly, since it may
be uploaded at any moment, but long enough that a client retrying in a loop is not a load each."""

_NAME = re.compile(NAME_PATTERN)

RESPONSE_KEYS = {"predict": "predictions"}
"""Response member per output method: `predict` answers as `predictions` (what MLflow, KServe
and most clients read); every other method answers under its own name (`predict_proba`)."""


RawHeaders: TypeAlias = tuple[tuple[bytes, bytes], ...]
"""Response headers as ASGI sends them: lower-case names and values, already encoded."""


@dataclass(frozen=True, slots=True)
class Answer:
    content: bytes
    headers: RawHeaders


@dataclass(frozen=True, slots=True)
class Endpoint:
    """What a (version, alias) pair reuses on every request: JSON prefix, headers, metrics."""

    name: str
    version: int
    alias: str | None
    """The alias that routed the request; None for a pinned version."""
    sha256: str
    prefix: bytes
    """The head of Berth's own JSON answer, `{"model": ..., "version": ..., "alias": ...`."""
    headers: RawHeaders
    """`X-Model-Version` and `X-Model-Sha256`, encoded once here instead of on every answer."""
    metrics: EndpointMetrics


Inputs: TypeAlias = np.ndarray[Any, Any]
P = TypeVar("P")
T = TypeVar("T")

Decode: TypeAlias = Callable[[P, LoadedModel], tuple[Inputs, tuple[str, ...]]]
"""A protocol's request → (the 2-D input array, the output methods asked for), for one version."""

Encode: TypeAlias = Callable[[P, Endpoint, tuple[str, ...], list[Any]], T]
"""A protocol's answer from the request, what answered, the methods called and their results."""


def _numpy_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def encode(result: Any) -> bytes:
    """One model output → JSON. NaN and infinities become null: JSON has no spelling for them."""
    array = np.asarray(result)
    kind = array.dtype.kind
    if kind in "biuf":
        # Plain numbers: the C encoder with no `default` hook is the fast path. Non-finite
        # values show as NaN/Infinity tokens, which no finite float's repr contains.
        text = json.dumps(array.tolist())
        if kind == "f" and ("NaN" in text or "Infinity" in text):
            boxed = array.astype(object)
            boxed[~np.isfinite(array)] = None
            text = json.dumps(boxed.tolist())
        return text.encode()
    return json.dumps(array.tolist(), default=_numpy_default).encode()


class PredictService:
    def __init__(
        self,
        router: Router[LoadedModel],
        cache: ModelCache,
        shadower: Shadower,
        metrics: ServingMetrics,
        *,
        default_alias: str,
        inline_max_rows: int,
        log: PredictLog | None = None,
        spans: Spans | None = None,
        batcher: Batcher | None = None,
        failed_retry_seconds: float = 300.0,
        refusals: Refusals | None = None,
    ) -> None:
        self._router = router
        self._cache = cache
        self._shadower = shadower
        self._metrics = metrics
        self.default_alias = default_alias
        self._inline_max_rows = inline_max_rows
        self._log = log or PredictLog()
        self._spans = spans or Spans(None)
        self._batcher = batcher
        self._failed_retry_seconds = failed_retry_seconds
        self._refusals = refusals if refusals is not None else Refusals()
        self._endpoints: dict[tuple[str, int, str | None], Endpoint] = {}

    @property
    def router(self) -> Router[LoadedModel]:
        return self._router

    @property
    def cache(self) -> ModelCache:
        return self._cache

    def _endpoint(self, model: LoadedModel, alias: str | None) -> Endpoint:
        key = (model.name, model.version, alias)
        found = self._endpoints.get(key)
        if found is None or found.sha256 != model.sha256:
            head: dict[str, Any] = {"model": model.name, "version": model.version}
            if alias is not None:
                head["alias"] = alias
            found = Endpoint(
                name=model.name,
                version=model.version,
                alias=alias,
                sha256=model.sha256,
                prefix=json.dumps(head).encode()[:-1],
                headers=(
                    (b"x-model-version", str(model.version).encode()),
                    (b"x-model-sha256", model.sha256.encode()),
                ),
                metrics=self._metrics.endpoint(model.name, model.version, alias),
            )
            self._endpoints[key] = found
        return found

    # --- Berth's own JSON (and CSV) bodies ------------------------------------------------------

    async def predict_alias(
        self, name: str, alias: str, body: bytes, routing_key: str | None, *, csv: bool = False
    ) -> Answer:
        """Answer through an alias: sticky by `routing_key` when variants split the traffic."""
        return await self.infer_alias(
            name,
            alias,
            body,
            decode=decode_csv if csv else decode_json,
            encode=encode_berth,
            routing_key=routing_key,
        )

    async def predict_version(
        self, name: str, version: int, body: bytes, *, csv: bool = False
    ) -> Answer:
        """Answer from a pinned version, loading it on first use (one load for concurrent ones)."""
        return await self.infer_version(
            name, version, body, decode=decode_csv if csv else decode_json, encode=encode_berth
        )

    # --- the core every protocol shares ---------------------------------------------------------

    async def infer_alias(
        self,
        name: str,
        alias: str,
        request: P,
        *,
        decode: Decode[P],
        encode: Encode[P, T],
        routing_key: str | None,
    ) -> T:
        """Route through an alias, decode `request` for the version picked, predict, encode."""
        started = time.perf_counter()
        model: LoadedModel | None = None
        try:
            with self._spans.start("berth.route", name, alias) as span:
                route = self._router.table.get((name, alias))
                if route is None:
                    raise self.no_route(name, alias)
                model = route.pick(routing_key)
                if span is not None:
                    span.set_attribute("berth.model_version", model.version)
            inputs, outputs = decode(request, model)
            results = await self._call(model, inputs, outputs)
            if route.shadows:
                live = results[outputs.index("predict")] if "predict" in outputs else None
                self._shadower.submit(alias, inputs, live, route.shadows)
            endpoint = self._endpoint(model, alias)
            answer = encode(request, endpoint, outputs, results)
        except ServingError as exc:
            if model is not None or (name, alias) in self._router.pending:
                version = model.version if model else None
                self._metrics.error(name, version, alias, exc.code)
                self._log.refused(name, version, alias, exc, time.perf_counter() - started)
            else:
                # Names from the URL that match nothing stay out of the labels: anyone could
                # otherwise mint a new time series per request.
                self._metrics.error("", None, "", exc.code)
                self._log.refused(name, None, alias, exc, time.perf_counter() - started)
            raise
        self._done(endpoint, started)
        return answer

    def no_route(self, name: str, alias: str) -> ServingError:
        """Why an alias has no route: its versions are not loaded (yet), or there is no such
        alias, or no alias of that model at all (then the model is what the answer names)."""
        reason = self._router.pending.get((name, alias))
        if reason is not None:
            return ModelUnavailable(
                f"alias '{alias}' of model '{name}' has no loaded version: {reason}",
                detail={"model": name, "alias": alias},
            )
        if self._router.knows_model(name):
            return AliasNotFound(name, alias)
        return ModelNotFound(name, message=f"model '{name}' does not exist or has no aliases")

    async def infer_version(
        self, name: str, version: int, request: P, *, decode: Decode[P], encode: Encode[P, T]
    ) -> T:
        """Decode `request` for a pinned version (loaded on first use), predict, encode."""
        started = time.perf_counter()
        model: LoadedModel | None = None
        try:
            model = await self.resolve_version(name, version)
            inputs, outputs = decode(request, model)
            results = await self._call(model, inputs, outputs)
            endpoint = self._endpoint(model, None)
            answer = encode(request, endpoint, outputs, results)
        except ServingError as exc:
            if model is not None or (isinstance(exc, LoadFailed) and not exc.transient):
                self._metrics.error(name, version, None, exc.code)
            else:
                self._metrics.error("", None, "", exc.code)
            self._log.refused(name, version, None, exc, time.perf_counter() - started)
            raise
        self._done(endpoint, started)
        return answer

    async def resolve_version(self, name: str, version: int) -> LoadedModel:
        """The pinned version, loaded first if needed; `ModelNotFound` / `VersionNotFound`.

        A load that failed for good is answered again from memory for `failed_retry_seconds`
        (versions are immutable: the same bytes fail the same way), a version the registry lacks
        for `NOT_FOUND_SECONDS`; each would otherwise be a download, and a record in the failure
        log pushing the aliases' own failures out of it, per request. Transient failures (the
        registry or its store down) are tried again on the next request.
        """
        model = self._cache.get(name, version)
        if model is None:
            if not _NAME.match(name):
                raise ModelNotFound(name)
            # Past the registry's range no version can exist; asking it would record a
            # load failure, and the heartbeat carrying that failure would then be refused.
            if not 1 <= version <= MAX_VERSION:
                raise VersionNotFound(name, version)
            key = (name, version)
            refused = self._refusals.get(key)
            if refused is not None:
                raise refused
            try:
                model = await self._cache.get_or_load(name, version)
            except LoadFailed as exc:
                if not exc.transient:
                    self._refusals.remember(key, exc, seconds=self._failed_retry_seconds)
                raise
            except NotFound as exc:
                self._refusals.remember(key, exc, seconds=NOT_FOUND_SECONDS)
                raise
        return model

    def _done(self, endpoint: Endpoint, started: float) -> None:
        seconds = time.perf_counter() - started
        endpoint.metrics.requests.inc()
        endpoint.metrics.latency.observe(seconds)
        self._log.answered(endpoint.name, endpoint.version, endpoint.alias, seconds)

    async def _call(
        self, model: LoadedModel, inputs: np.ndarray[Any, Any], outputs: tuple[str, ...]
    ) -> list[Any]:
        methods = model.methods
        calls = []
        for output in outputs:
            method = methods.get(output)
            if method is None:
                raise UnsupportedOutput(
                    f"version {model.version} of model '{model.name}' has no {output}; it "
                    f"offers {', '.join(sorted(methods))}",
                    detail={"output": output, "available": sorted(methods)},
                )
            calls.append(method)
        try:
            with self._spans.start("berth.predict", model.name, version=model.version) as span:
                if span is not None:
                    span.set_attribute("berth.rows", len(inputs))
                if model.inline and len(inputs) <= self._inline_max_rows:
                    # Measured at warm-up to be cheaper than the ~0.1 ms a thread hop costs.
                    return call_all(calls, inputs)
                if self._batcher is not None:
                    return await self._batcher.predict(model, outputs, calls, inputs)
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(None, call_all, calls, inputs)
        except (ValueError, TypeError) as exc:
            raise PredictionRejected(
                f"version {model.version} of model '{model.name}' rejected the input: {exc}",
                detail={"model": model.name, "version": model.version},
            ) from exc
        except Exception as exc:
            logger.exception("predict failed in model %s version %s", model.name, model.version)
            raise PredictionFailed(
                f"version {model.version} of model '{model.name}' failed: {type(exc).__name__}",
                detail={"model": model.name, "version": model.version},
            ) from exc


def parse_json(body: bytes) -> Any:
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise MalformedBody(f"the body is not valid JSON: {exc}"[:300], detail={}) from exc
    check_json(parsed, text=body)
    return parsed


def decode_json(body: bytes, model: LoadedModel) -> tuple[Inputs, tuple[str, ...]]:
    """Berth's JSON body (and MLflow's and KServe V1's keys) for this version's signature."""
    return parse_body(parse_json(body), model.schema)


def decode_csv(body: bytes, model: LoadedModel) -> tuple[Inputs, tuple[str, ...]]:
    """A `text/csv` body, as MLflow's scoring server takes it: a header row, then rows."""
    return parse_csv(body, model.schema), DEFAULT_OUTPUTS


def encode_outputs(outputs: tuple[str, ...], results: list[Any]) -> list[bytes]:
    """`, "predictions": [...], "predict_proba": [...]` as parts of a JSON object."""
    parts = []
    for output, result in zip(outputs, results, strict=True):
        parts.append(b', "' + RESPONSE_KEYS.get(output, output).encode() + b'": ')
        parts.append(encode(result))
    return parts


def encode_berth(
    body: bytes, endpoint: Endpoint, outputs: tuple[str, ...], results: list[Any]
) -> Answer:
    """Berth's answer: `{"model", "version", "alias"?, "predictions", ...}` and its headers."""
    return Answer(
        content=b"".join([endpoint.prefix, *encode_outputs(outputs, results), b"}"]),
        headers=endpoint.headers,
    )
