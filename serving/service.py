"""The predict path: resolve the version, parse the body, call the model, encode the answer.

It touches only memory: the routing table (one reference read per request), the model cache,
and counters. The registry is called only to load a pinned version on its first use.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from registry.schemas import NAME_PATTERN
from serving.cache import ModelCache
from serving.errors import (
    AliasNotFound,
    LoadFailed,
    MalformedBody,
    ModelNotFound,
    ModelUnavailable,
    PredictionFailed,
    PredictionRejected,
    ServingError,
    UnsupportedOutput,
    VersionNotFound,
)
from serving.inputs import parse_body
from serving.limits import check_json
from serving.loader import LoadedModel
from serving.metrics import EndpointMetrics, ServingMetrics
from serving.routing import Router
from serving.shadow import Shadower

logger = logging.getLogger(__name__)

MAX_VERSION = 2**31 - 1
"""The largest version number the registry's contract allows (`registry.schemas.VersionNumber`)."""

_NAME = re.compile(NAME_PATTERN)

RESPONSE_KEYS = {"predict": "predictions"}
"""Response member per output method: `predict` answers as `predictions` (what MLflow, KServe
and most clients read); every other method answers under its own name (`predict_proba`)."""


@dataclass(frozen=True, slots=True)
class Answer:
    content: bytes
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class _Endpoint:
    """What a (version, alias) pair reuses on every request: JSON prefix, headers, metrics."""

    prefix: bytes
    headers: dict[str, str]
    metrics: EndpointMetrics


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


def _call_all(methods: Sequence[Callable[[Any], Any]], inputs: np.ndarray[Any, Any]) -> list[Any]:
    return [method(inputs) for method in methods]


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
    ) -> None:
        self._router = router
        self._cache = cache
        self._shadower = shadower
        self._metrics = metrics
        self.default_alias = default_alias
        self._inline_max_rows = inline_max_rows
        self._endpoints: dict[tuple[str, int, str | None], _Endpoint] = {}

    def _endpoint(self, model: LoadedModel, alias: str | None) -> _Endpoint:
        key = (model.name, model.version, alias)
        found = self._endpoints.get(key)
        if found is None or found.headers["X-Model-Sha256"] != model.sha256:
            head: dict[str, Any] = {"model": model.name, "version": model.version}
            if alias is not None:
                head["alias"] = alias
            found = _Endpoint(
                prefix=json.dumps(head).encode()[:-1],
                headers={"X-Model-Version": str(model.version), "X-Model-Sha256": model.sha256},
                metrics=self._metrics.endpoint(model.name, model.version, alias),
            )
            self._endpoints[key] = found
        return found

    async def predict_alias(
        self, name: str, alias: str, body: bytes, routing_key: str | None
    ) -> Answer:
        """Answer through an alias: sticky by `routing_key` when variants split the traffic."""
        started = time.perf_counter()
        model: LoadedModel | None = None
        try:
            route = self._router.table.get((name, alias))
            if route is None:
                reason = self._router.pending.get((name, alias))
                if reason is not None:
                    raise ModelUnavailable(
                        f"alias '{alias}' of model '{name}' has no loaded version: {reason}",
                        detail={"model": name, "alias": alias},
                    )
                raise AliasNotFound(name, alias)
            model = route.pick(routing_key)
            inputs, outputs = parse_body(_parse_json(body), model.schema)
            results = await self._call(model, inputs, outputs)
            if route.shadows:
                live = results[outputs.index("predict")] if "predict" in outputs else None
                self._shadower.submit(alias, inputs, live, route.shadows)
        except ServingError as exc:
            if model is not None or (name, alias) in self._router.pending:
                self._metrics.error(name, model.version if model else None, alias, exc.code)
            else:
                # Names from the URL that match nothing stay out of the labels: anyone could
                # otherwise mint a new time series per request.
                self._metrics.error("", None, "", exc.code)
            raise
        return self._answer(model, alias, outputs, results, started)

    async def predict_version(self, name: str, version: int, body: bytes) -> Answer:
        """Answer from a pinned version, loading it on first use (one load for concurrent ones)."""
        started = time.perf_counter()
        model: LoadedModel | None = None
        try:
            model = self._cache.get(name, version)
            if model is None:
                if not _NAME.match(name):
                    raise ModelNotFound(name)
                # Past the registry's range no version can exist; asking it would record a
                # load failure, and the heartbeat carrying that failure would then be refused.
                if not 1 <= version <= MAX_VERSION:
                    raise VersionNotFound(name, version)
                model = await self._cache.get_or_load(name, version)
            inputs, outputs = parse_body(_parse_json(body), model.schema)
            results = await self._call(model, inputs, outputs)
        except ServingError as exc:
            if model is not None or (isinstance(exc, LoadFailed) and not exc.transient):
                self._metrics.error(name, version, None, exc.code)
            else:
                self._metrics.error("", None, "", exc.code)
            raise
        return self._answer(model, None, outputs, results, started)

    def _answer(
        self,
        model: LoadedModel,
        alias: str | None,
        outputs: tuple[str, ...],
        results: list[Any],
        started: float,
    ) -> Answer:
        endpoint = self._endpoint(model, alias)
        parts = [endpoint.prefix]
        for output, result in zip(outputs, results, strict=True):
            parts.append(b', "' + RESPONSE_KEYS.get(output, output).encode() + b'": ')
            parts.append(encode(result))
        parts.append(b"}")
        endpoint.metrics.requests.inc()
        endpoint.metrics.latency.observe(time.perf_counter() - started)
        return Answer(content=b"".join(parts), headers=endpoint.headers)

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
            if model.inline and len(inputs) <= self._inline_max_rows:
                # Measured at warm-up to be cheaper than the ~0.1 ms a thread hop costs.
                return _call_all(calls, inputs)
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(None, _call_all, calls, inputs)
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


def _parse_json(body: bytes) -> Any:
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise MalformedBody(f"the body is not valid JSON: {exc}"[:300], detail={}) from exc
    check_json(parsed)
    return parsed
