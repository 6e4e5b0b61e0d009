"""HTTP only: routes, body reading, error responses. Everything else is delegated.

Predict:
- `POST /models/{name}/predict` (the default alias), `POST /models/{name}/aliases/{alias}/predict`,
  `POST /models/{name}/versions/{version}/predict` (pinned; loaded on first use).
- Body: one of `inputs` (rows, records, or `{feature: [values]}`), `instances`,
  `dataframe_split`, `dataframe_records`, `input` (one row or record); optionally
  `"outputs": ["predict", "predict_proba", "predict_log_proba", "decision_function"]`.
  Or `Content-Type: text/csv`: a header row naming the features, then rows (as MLflow takes it).
- Answer: `{"model", "version", "alias" (routed by alias only), "predictions"}`; `predictions`
  is the output of `predict`, and each other requested method answers under its own name, e.g.
  `"predict_proba": [[0.2, 0.8]]`, one entry per input row. Headers `X-Model-Version` and
  `X-Model-Sha256` name what answered. `X-Routing-Key` makes A/B routing sticky.
- Errors: `{"error", "message", "detail"}`; see `serving.errors.HTTP_STATUS`.

The predict routes are plain Starlette routes, not FastAPI path operations: FastAPI's parameter
solving costs about a fifth of a request at this size (bare FastAPI 4,250 req/s against bare
Starlette 5,250 on this machine), and the predict path parses its own body anyway.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from registry.schemas import Role
from serving.auth import Authorize, declare, public, require_reader
from serving.errors import (
    BadRequest,
    InvalidInput,
    MethodNotAllowed,
    NotFound,
    NotReady,
    PayloadTooLarge,
    ServingError,
    error_body,
    status_of,
)
from serving.service import Answer, PredictService, RawHeaders

if TYPE_CHECKING:
    from serving.main import Runtime

ROUTING_KEY_HEADER = "x-routing-key"


def is_csv(request: Request) -> bool:
    content_type = request.headers.get("content-type")
    return content_type is not None and content_type.startswith("text/csv")


PREDICT_SUMMARIES = {
    "/models/{name}/predict": "Predict with the default alias (production unless configured).",
    "/models/{name}/aliases/{alias}/predict": "Predict with a named alias.",
    "/models/{name}/versions/{version}/predict": "Predict with a pinned version.",
}


def error_response(error: ServingError) -> JSONResponse:
    status = status_of(error)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(error_body(error), status_code=status, headers=headers)


class AnswerResponse(Response):
    """A 200 from headers encoded once per endpoint.

    Starlette's `Response` lower-cases and encodes every header of every response; a predict's
    headers are the same for every answer of a version, so `Endpoint` encodes them once.
    """

    def __init__(
        self, content: bytes, headers: RawHeaders, media_type: bytes = b"application/json"
    ) -> None:
        self.status_code = 200
        self.background = None
        self.body = content
        self.raw_headers = [
            *headers,
            (b"content-type", media_type),
            (b"content-length", b"%d" % len(content)),
        ]


def _answer(answer: Answer) -> Response:
    return AnswerResponse(answer.content, answer.headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than `limit` bytes without reading them all.

    Read off `receive` directly rather than through `Request.body()`, whose async generator
    costs more than the rest of the read for a body that comes in one message (nearly all).
    The stream is consumed: nothing after this may read the body through the request.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(
            f"the body has {declared} bytes; the limit is {limit}", detail={"limit": limit}
        )
    receive = request.receive
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # http.disconnect
            raise ClientDisconnect()
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body exceeds {limit} bytes", detail={"limit": limit})
        if not message.get("more_body", False):
            if not chunks:
                return chunk
            chunks.append(chunk)
            return b"".join(chunks)
        chunks.append(chunk)


def predict_routes(
    service: PredictService, *, max_body_bytes: int, authorize: Authorize
) -> list[Route]:
    @declare(Role.reader.value)
    async def predict_default(request: Request) -> Response:
        try:
            await authorize(request)
            body = await read_body(request, max_body_bytes)
            answer = await service.predict_alias(
                request.path_params["name"],
                service.default_alias,
                body,
                request.headers.get(ROUTING_KEY_HEADER),
                csv=is_csv(request),
            )
        except ServingError as exc:
            return error_response(exc)
        return _answer(answer)

    @declare(Role.reader.value)
    async def predict_alias(request: Request) -> Response:
        try:
            await authorize(request)
            body = await read_body(request, max_body_bytes)
            answer = await service.predict_alias(
                request.path_params["name"],
                request.path_params["alias"],
                body,
                request.headers.get(ROUTING_KEY_HEADER),
                csv=is_csv(request),
            )
        except ServingError as exc:
            return error_response(exc)
        return _answer(answer)

    @declare(Role.reader.value)
    async def predict_version(request: Request) -> Response:
        try:
            await authorize(request)
            body = await read_body(request, max_body_bytes)
            answer = await service.predict_version(
                request.path_params["name"],
                request.path_params["version"],
                body,
                csv=is_csv(request),
            )
        except ServingError as exc:
            return error_response(exc)
        return _answer(answer)

    return [
        Route("/models/{name}/predict", predict_default, methods=["POST"]),
        Route("/models/{name}/aliases/{alias}/predict", predict_alias, methods=["POST"]),
        Route("/models/{name}/versions/{version:int}/predict", predict_version, methods=["POST"]),
    ]


def ops_router(runtime: Runtime) -> APIRouter:
    router = APIRouter(tags=["operations"])
    reader = [Depends(require_reader)]

    @router.get("/healthz", dependencies=[Depends(public)])
    async def healthz() -> dict[str, str]:
        """Alive: the process answers. Says nothing about models."""
        return {"status": "ok"}

    @router.get(
        "/readyz",
        dependencies=[Depends(public)],
        responses={503: {"description": "Not ready yet."}},
    )
    async def readyz() -> Response:
        """Ready once the default aliases of the first snapshot are loaded (or failed for good)."""
        ready, detail = runtime.readiness()
        if not ready:
            return error_response(NotReady("serving is not ready yet", detail=detail))
        return JSONResponse({"status": "ready", **detail})

    @router.get("/status", dependencies=reader)
    async def status() -> dict[str, Any]:
        """Loaded versions, routing revisions, feed position and lag, recent failures."""
        return runtime.status()

    @router.get("/metrics", response_class=Response, dependencies=reader)
    async def metrics() -> Response:
        return Response(runtime.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return router


def install_error_handlers(app: FastAPI) -> None:
    """Every error leaves in the one shape `{"error", "message", "detail"}`."""

    async def on_serving_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ServingError)
        return error_response(exc)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        error: ServingError
        if exc.status_code == 404:
            error = NotFound(f"no route {request.url.path}")
        elif exc.status_code == 405:
            error = MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}")
        else:
            error = BadRequest(str(exc.detail))
        return error_response(error)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        error = InvalidInput("the request is not valid", detail=exc.errors())
        return error_response(error)

    app.add_exception_handler(ServingError, on_serving_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
