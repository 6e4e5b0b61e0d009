"""Open Inference Protocol (V2 REST), as Triton, KServe and MLServer speak it.

- `GET /v2`, `GET /v2/health/live`, `GET /v2/health/ready`: server metadata and health.
- `GET /v2/models/{name}[/versions/{version}]`: model metadata; inputs are the signature's
  features (one tensor each), outputs the estimator methods the version offers.
- `GET /v2/models/{name}[/versions/{version}]/ready`.
- `POST /v2/models/{name}[/versions/{version}]/infer`: without a version the default alias routes
  (A/B split and `X-Routing-Key` stickiness included); with one the version is pinned and loaded
  on first use. `model_version` always names the version that answered.

Errors are `{"error": "<message>"}`, the protocol's shape, with the status of Berth's one table.
Infer is a plain Starlette route beside Berth's own predict routes (it parses its own body,
binary data included); the rest are FastAPI routes, off the hot path, documented by FastAPI.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
from fastapi import APIRouter, Header, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from registry.schemas import Role
from serving.api import ROUTING_KEY_HEADER, AnswerResponse, read_body
from serving.auth import PUBLIC, declare
from serving.errors import BadRequest, ModelUnavailable, ServingError, status_of
from serving.loader import LoadedModel
from serving.protocols.common import Guard, error_response, open_door
from serving.protocols.schemas import (
    LiveOut,
    ModelMetadata,
    ModelReadyOut,
    OipError,
    ReadyOut,
    ServerMetadata,
    TensorMetadata,
)
from serving.protocols.tensors import (
    FROM_DTYPE,
    HEADER_LENGTH,
    InferRequest,
    datatype_of,
    decompress,
    encode_response,
    parse_infer_request,
    to_inputs,
)
from serving.service import Endpoint, Inputs, PredictService, RawHeaders

if TYPE_CHECKING:
    from serving.main import Runtime

logger = logging.getLogger(__name__)

# --- answers ---------------------------------------------------------------------------------


def oip_error(error: ServingError) -> JSONResponse:
    return error_response(error, {"error": error.message})


@dataclass(frozen=True, slots=True)
class V2Answer:
    content: bytes
    headers: RawHeaders
    binary: bool


@dataclass(slots=True)
class InferCall:
    """An infer request as read off the wire; parsed inside the predict core, like every body,
    so a malformed one is counted and logged against the model it was sent to."""

    body: bytes
    encoding: str | None
    header_length: str | None
    limit: int
    parsed: InferRequest | None = None


def decode(call: InferCall, model: LoadedModel) -> tuple[Inputs, tuple[str, ...]]:
    body = decompress(call.body, call.encoding, call.limit)
    call.parsed = parse_infer_request(body, call.header_length)
    return to_inputs(call.parsed, model.schema)


def encode(
    call: InferCall, endpoint: Endpoint, outputs: tuple[str, ...], results: list[Any]
) -> V2Answer:
    assert call.parsed is not None, "decode runs before encode"
    head = b'{"model_name": "%s", "model_version": "%d"' % (
        endpoint.name.encode(),
        endpoint.version,
    )
    content, header_length = encode_response(head, call.parsed, outputs, results)
    if header_length is None:
        return V2Answer(content=content, headers=endpoint.headers, binary=False)
    headers = (*endpoint.headers, (b"inference-header-content-length", b"%d" % header_length))
    return V2Answer(content=content, headers=headers, binary=True)


def _respond(answer: V2Answer) -> Response:
    media_type = b"application/octet-stream" if answer.binary else b"application/json"
    return AnswerResponse(answer.content, answer.headers, media_type)


def _version(text: str) -> int:
    if len(text) > 10 or not text.isdigit() or int(text) < 1:
        raise BadRequest(f"model version '{text[:40]}' is not a positive integer")
    return int(text)


def infer_routes(
    service: PredictService, *, max_body_bytes: int, guard: Guard = open_door
) -> list[Route]:
    async def read_request(request: Request) -> InferCall:
        headers = request.headers
        return InferCall(
            body=await read_body(request, max_body_bytes),
            encoding=headers.get("content-encoding"),
            header_length=headers.get(HEADER_LENGTH),
            limit=max_body_bytes,
        )

    @declare(Role.reader.value)
    async def infer(request: Request) -> Response:
        try:
            await guard(request)
            parsed = await read_request(request)
            answer = await service.infer_alias(
                request.path_params["name"],
                service.default_alias,
                parsed,
                decode=decode,
                encode=encode,
                routing_key=request.headers.get(ROUTING_KEY_HEADER),
            )
        except ServingError as exc:
            return oip_error(exc)
        return _respond(answer)

    @declare(Role.reader.value)
    async def infer_version(request: Request) -> Response:
        try:
            await guard(request)
            version = _version(request.path_params["version"])
            parsed = await read_request(request)
            answer = await service.infer_version(
                request.path_params["name"], version, parsed, decode=decode, encode=encode
            )
        except ServingError as exc:
            return oip_error(exc)
        return _respond(answer)

    return [
        Route("/v2/models/{name}/infer", infer, methods=["POST"]),
        Route("/v2/models/{name}/versions/{version}/infer", infer_version, methods=["POST"]),
    ]


# --- metadata --------------------------------------------------------------------------------


class OutputShapes:
    """What each output method of a version answers (datatype, shape), found once per version.

    Signatures describe inputs; outputs are found by asking the model about one row, in a worker
    thread, the first time a version's metadata is asked for.
    """

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._known: OrderedDict[tuple[str, int, str], list[TensorMetadata]] = OrderedDict()

    async def of(self, model: LoadedModel) -> list[TensorMetadata]:
        key = (model.name, model.version, model.sha256)
        found = self._known.get(key)
        if found is None:
            found = await asyncio.to_thread(_probe_outputs, model)
            self._known[key] = found
            while len(self._known) > self._size:
                self._known.popitem(last=False)
        return found


def _probe_outputs(model: LoadedModel) -> list[TensorMetadata]:
    schema = model.schema
    out = []
    sample: np.ndarray[Any, Any] | None = None
    if schema is not None:
        sample = np.zeros((1, len(schema.names)), dtype=schema.array_dtype)
        if schema.array_dtype == np.dtype(object):
            sample[0] = ["" if k == "s" else 0 for k in schema.kinds]
    for name, method in sorted(model.methods.items()):
        datatype, shape = "FP64", [-1]
        if sample is not None:
            try:
                result = np.asarray(method(sample))
            except Exception as exc:
                # The output is still served; only its metadata falls back to the default.
                logger.info(
                    "could not probe %s of %s v%s: %s", name, model.name, model.version, exc
                )
            else:
                datatype = datatype_of(result)
                shape = [-1, *result.shape[1:]]
        out.append(TensorMetadata(name=name, datatype=datatype, shape=shape))
    return out


def _inputs(model: LoadedModel) -> list[TensorMetadata]:
    schema = model.schema
    if schema is None:
        # Stored without a signature: only a matrix can be sent, of whatever numbers it takes.
        return [TensorMetadata(name="input", datatype="FP64", shape=[-1, -1])]
    return [
        TensorMetadata(name=name, datatype=FROM_DTYPE[dtype], shape=[-1])
        for name, dtype in zip(schema.names, schema.dtypes, strict=True)
    ]


def _versions_router(runtime: Runtime, guard: Guard) -> APIRouter:
    service = runtime.service
    shapes = OutputShapes()
    errors: dict[int | str, dict[str, Any]] = {
        code: {"model": OipError, "description": text}
        for code, text in (
            (400, "Malformed version."),
            (401, "No bearer token, or one not vouched for."),
            (403, "The token may not call this model."),
            (404, "Unknown model, alias or version."),
            (502, "The registry refused serving."),
            (503, "Not loaded (yet), or the registry is unreachable."),
        )
    }
    router = APIRouter(prefix="/v2", tags=["open inference protocol (v2)"], responses=errors)

    def alias_model(name: str, routing_key: str | None) -> tuple[LoadedModel, str]:
        alias = service.default_alias
        route = service.router.table.get((name, alias))
        if route is None:
            raise service.no_route(name, alias)
        if routing_key is not None:
            return route.pick(routing_key), alias
        # Without a key, describe the variant most requests land on (ties: the newest).
        weights = dict(route.weights)
        return max(route.targets, key=lambda m: (weights.get(m.version, 0), m.version)), alias

    async def metadata(
        model: LoadedModel, alias: str | None, versions: list[int]
    ) -> dict[str, Any]:
        parameters = {"version": str(model.version)}
        if alias is not None:
            parameters["alias"] = alias
        return ModelMetadata(
            name=model.name,
            versions=[str(v) for v in versions],
            platform=model.flavor,
            inputs=_inputs(model),
            outputs=await shapes.of(model),
            parameters=parameters,
        ).model_dump()

    @router.get("/models/{name}", response_model=ModelMetadata)
    @declare(Role.reader.value)
    async def model_metadata(
        name: str,
        request: Request,
        routing_key: Annotated[str | None, Header(alias="X-Routing-Key")] = None,
    ) -> Response:
        """Metadata of the version the default alias routes to (for this routing key)."""
        try:
            await guard(request)
            model, alias = alias_model(name, routing_key)
            route = service.router.table[(name, alias)]
            body = await metadata(model, alias, [v for v, w in route.weights if w > 0])
        except ServingError as exc:
            return oip_error(exc)
        return JSONResponse(body)

    @router.get("/models/{name}/versions/{version}", response_model=ModelMetadata)
    @declare(Role.reader.value)
    async def version_metadata(name: str, version: str, request: Request) -> Response:
        """Metadata of a pinned version (loaded first if it is not in memory)."""
        try:
            await guard(request)
            model = await service.resolve_version(name, _version(version))
            body = await metadata(model, None, [model.version])
        except ServingError as exc:
            return oip_error(exc)
        return JSONResponse(body)

    @router.get("/models/{name}/ready", response_model=ModelReadyOut)
    @declare(Role.reader.value)
    async def model_ready(name: str, request: Request) -> Response:
        """200 when the default alias of the model serves a loaded version, else 503."""
        try:
            await guard(request)
            alias_model(name, None)
        except ModelUnavailable:
            return JSONResponse({"name": name, "ready": False}, status_code=503)
        except ServingError as exc:
            return oip_error(exc)
        return JSONResponse({"name": name, "ready": True})

    @router.get("/models/{name}/versions/{version}/ready", response_model=ModelReadyOut)
    @declare(Role.reader.value)
    async def version_ready(name: str, version: str, request: Request) -> Response:
        """200 once the pinned version is loaded; asking loads it, as a first infer would."""
        try:
            await guard(request)
            await service.resolve_version(name, _version(version))
        except ServingError as exc:
            if status_of(exc) == 503:
                return JSONResponse({"name": name, "ready": False}, status_code=503)
            return oip_error(exc)
        return JSONResponse({"name": name, "ready": True})

    return router


def router(runtime: Runtime, *, server_version: str, guard: Guard = open_door) -> APIRouter:
    """The V2 metadata and health routes."""
    top = APIRouter(prefix="/v2", tags=["open inference protocol (v2)"])

    @top.get(
        "",
        response_model=ServerMetadata,
        responses={
            401: {"model": OipError, "description": "No bearer token, or one not vouched for."},
            503: {"model": OipError, "description": "The registry is unreachable."},
        },
    )
    @declare(Role.reader.value)
    async def server_metadata(request: Request) -> Response:
        """Server name, version and the protocol extensions it supports."""
        try:
            await guard(request)
        except ServingError as exc:
            return oip_error(exc)
        body = {"name": "berth", "version": server_version, "extensions": ["binary_tensor_data"]}
        return JSONResponse(body)

    # Health is public, as /healthz and /readyz are: orchestrators probe without tokens.
    @top.get("/health/live", response_model=LiveOut)
    @declare(PUBLIC)
    async def live() -> dict[str, bool]:
        """The process answers."""
        return {"live": True}

    @top.get(
        "/health/ready",
        response_model=ReadyOut,
        responses={503: {"model": ReadyOut, "description": "Not ready yet."}},
    )
    @declare(PUBLIC)
    async def ready() -> Response:
        """Ready once the default aliases of the first routing snapshot are loaded."""
        is_ready, _ = runtime.readiness()
        return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)

    combined = APIRouter()
    combined.include_router(top)
    combined.include_router(_versions_router(runtime, guard), prefix="")
    return combined
