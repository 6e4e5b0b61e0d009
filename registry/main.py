"""Assembles the registry application: `create_app(settings)`."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from registry import __version__, auth, migrate
from registry.api import health_router, router
from registry.config import RegistrySettings
from registry.db import Database
from registry.errors import HTTP_STATUS, DatabaseUnavailable, RegistryError
from registry.feed import FeedWatcher, SharedReads, Signal
from registry.limits import UniformTooLarge
from registry.schemas import ChangesOut, ErrorBody, VersionOut, is_loopback
from registry.storage import ArtifactStore, open_store

log = logging.getLogger("registry")

VERSION = __version__


class InsecureBinding(RuntimeError):
    """Refusing to listen beyond loopback with authentication off."""


def check_binding(settings: RegistrySettings, host: str) -> None:
    """Refuse to expose an unauthenticated registry beyond this machine unless told to."""
    if settings.auth or settings.allow_insecure or is_loopback(host):
        return
    raise InsecureBinding(
        f"refusing to listen on {host} with authentication off (BERTH_AUTH=false): anyone who "
        "can reach it could publish models, and loading a model runs its code. Turn "
        "authentication on, bind to 127.0.0.1, or set BERTH_ALLOW_INSECURE=true."
    )


def create_app(
    settings: RegistrySettings | None = None,
    *,
    database: Database | None = None,
    store: ArtifactStore | None = None,
) -> FastAPI:
    """Build the registry app. Nothing is read from the environment unless `settings` is None."""
    settings = settings or RegistrySettings()
    database = database or Database(
        settings.effective_database_url,
        timeout=settings.db_timeout_seconds,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
    )
    store = store or open_store(
        settings.effective_artifact_store,
        timeout=settings.storage_timeout_seconds,
        part_size=settings.upload_part_bytes,
    )
    feed_signal, replica_signal = Signal(), Signal()
    watcher = FeedWatcher(database, feed_signal, poll_seconds=settings.feed_poll_seconds)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        feed_signal.bind(loop)
        replica_signal.bind(loop)
        if settings.auto_migrate:
            await asyncio.to_thread(migrate.upgrade, database)
        await asyncio.to_thread(check_schema, database)
        watcher.start()
        try:
            yield
        finally:
            await asyncio.to_thread(watcher.stop)
            database.dispose()

    app = FastAPI(
        title="Berth registry",
        version=VERSION,
        summary="Immutable model versions, aliases with history, and a change feed.",
        lifespan=lifespan,
        # A path is one of the API's or a 404: no redirect that echoes the request's own
        # segments (`/models/../` → `/models/..`) back to the client.
        redirect_slashes=False,
        responses={
            400: {"model": ErrorBody},
            401: {"model": ErrorBody},
            403: {"model": ErrorBody},
            404: {"model": ErrorBody},
            409: {"model": ErrorBody},
            413: {"model": ErrorBody},
            422: {"model": ErrorBody},
            503: {"model": ErrorBody},
        },
    )
    app.state.settings = settings
    app.state.db = database
    app.state.store = store
    app.state.feed_signal = feed_signal
    app.state.feed_reads = SharedReads[ChangesOut]()
    app.state.version_reads = SharedReads[VersionOut]()
    app.state.replica_signal = replica_signal
    app.state.token_cache = auth.TokenCache(settings.token_cache_seconds)
    app.state.replica_writes = threading.Lock()
    # Every route's body is bounded (the upload route lifts the bound for its own, streaming one).
    # Set per router rather than app-wide: the app-level limiter answers a declared-too-large
    # body from outside every middleware, where its plain-text 413 cannot be made uniform.
    app.include_router(router, max_body_size=settings.max_request_bytes)
    app.include_router(health_router, max_body_size=settings.max_request_bytes)
    install_error_handlers(app)
    app.add_middleware(UniformTooLarge, limit=settings.max_request_bytes)
    return app


def check_schema(database: Database) -> None:
    """Return if the schema is at the code's head, or the database is unreachable (/readyz says
    so); raise `Misconfigured` naming the command that fixes it otherwise."""
    try:
        migrate.require_head(database)
    except DatabaseUnavailable as exc:
        # Start anyway: /readyz reports it, and requests get 503 until the database is back.
        log.warning("database unreachable at start: %s", exc.message)


def freeze_startup_heap() -> None:
    """Move everything alive now out of the garbage collector's sight, for good.

    What a process holds when it starts to serve (numpy, scikit-learn, SQLAlchemy, the app) is
    never garbage, yet every full collection walked all of it: 100-170 ms pauses that put the
    p95 of listing 50 versions at 87 ms against a p50 of 19. Frozen, full passes see only what
    requests allocate. In the entry points, not `create_app`: a test process builds many apps,
    and cyclic garbage that was frozen would never be collected.
    """
    gc.collect()
    gc.freeze()


def error_response(status: int, code: str, message: str, detail: Any = None) -> JSONResponse:
    body = ErrorBody(error=code, message=message, detail=detail)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Every error leaves as `{"error", "message", "detail"}` with the status its code maps to."""

    async def registry_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RegistryError)
        status = HTTP_STATUS.get(exc.code, 500)
        if status >= 500:
            log.error("%s %s: %s", request.method, request.url.path, exc.message, exc_info=exc)
        return error_response(status, exc.code, exc.message, exc.detail)

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        where = " ".join(str(p) for p in first.get("loc", ()))
        message = f"{where}: {first.get('msg')}" if where else str(first.get("msg"))
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        detail = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
            for e in errors
        ]
        return error_response(422, "invalid_request", message + more, detail)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        codes = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
        code = codes.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        detail = None
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}"
        elif exc.status_code == 413:
            limit = request.app.state.settings.max_request_bytes
            message = f"the request body is larger than the {limit} bytes allowed"
            detail = {"max_request_bytes": limit}
        response = error_response(exc.status_code, code, message, detail)
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    app.add_exception_handler(RegistryError, registry_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_middleware(CatchUnexpected)


class CatchUnexpected:
    """Answer an unexpected exception with the uniform 500 body, logged once with an incident id.

    Starlette's own handler for `Exception` re-raises after responding, which makes uvicorn log a
    second traceback and drop the client's keep-alive connection.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            incident = uuid.uuid4().hex[:12]
            log.exception("unhandled error %s on %s %s", incident, scope["method"], scope["path"])
            if started:
                raise
            response = error_response(
                500, "internal_error", f"internal error {incident}; see the registry log"
            )
            await response(scope, receive, send)
