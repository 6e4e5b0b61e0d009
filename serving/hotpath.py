"""The inference routes' short way past FastAPI's middleware stack.

FastAPI hands every request through seven layers before an endpoint sees it (server errors,
telemetry, body limit, user middleware, exception handlers, exit stack, router) and back
through three `send` wrappers; on this machine that was about a tenth of a one-row predict, the
largest share of Berth's cost over the bare Starlette floor after the predict itself. The
inference endpoints need none of it: each reads and bounds its own body, authorises its caller,
and answers every `ServingError` itself as JSON.

So `ServingApp` tries the inference routes (`POST` only, the same `Route` objects the router
holds, so paths, converters and OpenAPI stay one definition) before the stack, and calls a
matching endpoint with only the request id around it, set inline rather than by a middleware
wrapping `send`. What the skipped layers would still have done is done here: an unexpected
exception is the uniform JSON 500, logged once. Everything else — other methods, other paths, a
path that matches with the wrong method (a 405) — takes the full stack. With tracing on the
short way is off: FastAPI's telemetry makes the request's server span, and a trace must not
lose it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.errors import ServingError, error_body
from serving.observability import REQUEST_ID, REQUEST_ID_KEY, request_id_from

logger = logging.getLogger(__name__)


def unexpected_error(scope: Scope) -> Response:
    """The uniform 500 for an exception nothing expected, logged with an incident id."""
    incident = uuid.uuid4().hex[:12]
    logger.exception("unhandled error %s on %s %s", incident, scope["method"], scope["path"])
    error = ServingError(f"internal error {incident}; see the serving log")
    return JSONResponse(error_body(error), status_code=500)


class IndexedHeaders(Headers):
    """Starlette's `Headers`, looked up through one dictionary built up front.

    `Headers.get` scans the list and, for an absent header, raises and catches a `KeyError`;
    a predict asks for four (authorization, length, type, routing key), half of them usually
    absent. As in `Headers`, the first of repeated headers is the one seen.
    """

    def __init__(self, scope: Scope) -> None:
        super().__init__(scope=scope)
        self._index: dict[bytes, bytes] = dict(reversed(scope["headers"]))

    def get(self, key: str, default: Any = None) -> Any:
        value = self._index.get(key.lower().encode("latin-1"))
        return default if value is None else value.decode("latin-1")

    def __getitem__(self, key: str) -> str:
        value = self._index.get(key.lower().encode("latin-1"))
        if value is None:
            raise KeyError(key)
        return value.decode("latin-1")

    def __contains__(self, key: Any) -> bool:
        return key.lower().encode("latin-1") in self._index

    def raw_value(self, name: bytes) -> bytes | None:
        """The first value of the header `name` (lower-case, as ASGI carries it), undecoded."""
        return self._index.get(name)


class HotRequest(Request):
    """The request the short way hands its endpoints: headers through `IndexedHeaders`."""

    def __init__(self, scope: Scope, receive: Receive) -> None:
        super().__init__(scope, receive)
        self._indexed = IndexedHeaders(scope)

    @property
    def headers(self) -> IndexedHeaders:
        return self._indexed


async def _call_endpoint(scope: Scope, receive: Receive, send: Send) -> None:
    """The endpoint, with what `RequestIdMiddleware` does on the full stack done inline: the id
    comes from the request's header index, and goes straight into the response's headers
    instead of through a wrapper around `send`."""
    request = HotRequest(scope, receive)
    request_id, id_header = request_id_from(request.headers.raw_value(REQUEST_ID_KEY))
    token = REQUEST_ID.set(request_id)
    try:
        try:
            response: Response = await scope["endpoint"](request)
        except ClientDisconnect:
            return  # the caller left while sending its body: nobody to answer, nothing to log
        except Exception:
            response = unexpected_error(scope)
        response.raw_headers.append(id_header)
        await response(scope, receive, send)
    finally:
        REQUEST_ID.reset(token)


class ServingApp(FastAPI):
    """FastAPI, with `hot_routes` answered straight from their endpoints."""

    hot_routes: Sequence[Route] = ()

    def take_short_way(self, routes: Sequence[Route]) -> None:
        if any(route.methods != {"POST"} for route in routes):
            raise ValueError("only POST routes take the short way")
        self.hot_routes = tuple(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            for route in self.hot_routes:
                match, child = route.matches(scope)
                if match is Match.FULL:
                    if self.root_path:
                        scope["root_path"] = self.root_path
                    scope["app"] = self
                    scope.update(child)
                    await _call_endpoint(scope, receive, send)
                    return
        await super().__call__(scope, receive, send)


class CatchUnexpected:
    """The full stack's counterpart of the short way's 500: JSON, logged once.

    Starlette's own handler for `Exception` answers in plain text, then re-raises, which makes
    uvicorn log a second traceback and drop the client's keep-alive connection.
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
        except ClientDisconnect:
            return  # as on the short way: nobody to answer, nothing to log
        except Exception:
            if started:
                raise
            await unexpected_error(scope)(scope, receive, send)
