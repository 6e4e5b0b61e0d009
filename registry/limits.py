"""Request-body limits: FastAPI's built-in limiter, with its one plain-text answer made uniform.

Starlette's limiter refuses a body whose declared Content-Length is over the limit by sending its
own `text/plain` 413 in place of whatever the app answered. This middleware, between the routes
and the client, swaps that response for the uniform error body; every other response passes
through untouched.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from registry.schemas import ErrorBody


class UniformTooLarge:
    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        body = ErrorBody(
            error="payload_too_large",
            message=f"the request body is larger than the {limit} bytes allowed",
            detail={"max_request_bytes": limit},
        )
        self._body = body.model_dump_json().encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        replacing = False

        async def uniform_send(message: Message) -> None:
            nonlocal replacing
            if message["type"] == "http.response.start" and message["status"] == 413:
                headers = dict(message.get("headers", []))
                if not headers.get(b"content-type", b"").startswith(b"application/json"):
                    replacing = True
                    await send(
                        {
                            "type": "http.response.start",
                            "status": 413,
                            "headers": [
                                (b"content-type", b"application/json"),
                                (b"content-length", str(len(self._body)).encode()),
                            ],
                        }
                    )
                    return
            if replacing:
                if message["type"] == "http.response.body" and not message.get("more_body"):
                    await send({"type": "http.response.body", "body": self._body})
                return
            await send(message)

        await self.app(scope, receive, uniform_send)
