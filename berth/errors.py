"""The client's error tree: one class per family of the API's error codes.

The registry and serving answer every error as `{"error", "message", "detail"}` with a status
that the code maps to (`registry.errors.HTTP_STATUS`, `serving.errors.HTTP_STATUS`). The status is
the family, so a caller writes `except berth.NotFound` whatever the exact code, and reads
`exc.code` (`model_not_found`, `alias_not_found`, ...) when it needs to tell them apart.
"""

from __future__ import annotations

from typing import Any, ClassVar


class BerthError(Exception):
    """Root of every error the client raises on purpose."""

    default_code: ClassVar[str] = "error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        detail: Any = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.detail = detail
        self.status = status


class BadRequest(BerthError):
    """400 (and 405): the request is malformed."""

    default_code = "bad_request"


class Unauthenticated(BerthError):
    """401: no token, or a token the registry does not know (or revoked)."""

    default_code = "unauthenticated"


class Forbidden(BerthError):
    """403: the token's role or model scope does not allow this."""

    default_code = "forbidden"


class NotFound(BerthError):
    """404: the model, version, alias, revision or token does not exist."""

    default_code = "not_found"


class Conflict(BerthError):
    """409: the alias moved meanwhile, the version is in use, nothing to roll back to."""

    default_code = "conflict"


class PayloadTooLarge(BerthError):
    """413: the upload or the request body exceeds the service's limit."""

    default_code = "payload_too_large"


class InvalidInput(BerthError):
    """415/422: the request parsed but does not fit (digest, signature, unsafe artifact, ...)."""

    default_code = "invalid_input"


class ServerError(BerthError):
    """500: the service failed; its log has the incident."""

    default_code = "internal_error"


class Unavailable(BerthError):
    """502/503: the service or something it depends on is down; trying again later may help."""

    default_code = "unavailable"


class Unreachable(Unavailable):
    """No HTTP answer at all: connection refused, DNS, TLS, timeout."""

    default_code = "unreachable"


class RolloutTimeout(BerthError):
    """A change was made, but not every live serving replica took it within the wait."""

    default_code = "rollout_timeout"


_BY_STATUS: dict[int, type[BerthError]] = {
    400: BadRequest,
    401: Unauthenticated,
    403: Forbidden,
    404: NotFound,
    405: BadRequest,
    409: Conflict,
    413: PayloadTooLarge,
    415: InvalidInput,
    422: InvalidInput,
    500: ServerError,
    502: Unavailable,
    503: Unavailable,
    504: Unavailable,
}


def error_for(status: int, body: Any, *, fallback: str) -> BerthError:
    """The typed error for an HTTP error answer; `fallback` is the message when none came."""
    code = message = None
    detail: Any = None
    if isinstance(body, dict):
        code = body.get("error") if isinstance(body.get("error"), str) else None
        message = body.get("message") if isinstance(body.get("message"), str) else None
        detail = body.get("detail")
    family = _BY_STATUS.get(status) or (ServerError if status >= 500 else BadRequest)
    return family(message or fallback, code=code, detail=detail, status=status)
