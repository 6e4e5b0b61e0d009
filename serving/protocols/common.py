"""What the protocol modules share: the guard hook and the plain `{"predictions": ...}` answer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from serving.errors import ServingError, status_of
from serving.service import Answer, Endpoint, encode_outputs

Guard = Callable[[Request], Awaitable[None]]
"""Runs before a protocol handler; raises a `ServingError` to refuse. Authentication plugs in
here, so every protocol's routes are guarded exactly as Berth's own predict routes are."""


async def open_door(request: Request) -> None:
    """The guard of a serving app without authentication."""


def error_response(error: ServingError, body: dict[str, Any]) -> JSONResponse:
    """A protocol's error body with Berth's status (and the bearer challenge on a 401)."""
    status = status_of(error)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, headers=headers)


def encode_predictions(
    request: Any, endpoint: Endpoint, outputs: tuple[str, ...], results: list[Any]
) -> Answer:
    """`{"predictions": [...]}` (plus any other method asked for, under its name): the answer
    KServe V1 and MLflow's scoring server give. The version that answered is in the headers."""
    parts = encode_outputs(outputs, results)
    parts[0] = parts[0][2:]  # no comma before the first member
    return Answer(content=b"".join([b"{", *parts, b"}"]), headers=endpoint.headers)
