"""Serving's error tree.

Every error serving raises on purpose derives from `ServingError` and carries a semantic `code`;
`HTTP_STATUS` is the one table that maps codes to statuses. Nothing here imports FastAPI or httpx:
the API layer translates errors into responses, the registry client translates httpx into these.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Self

LoadStage = Literal["download", "digest", "inspect", "load", "example", "other"]
"""Where loading a version failed; the same words as `registry.schemas.LoadFailure.stage`."""


class ServingError(Exception):
    """Root of every error serving raises on purpose."""

    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, *, detail: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail

    def replay(self) -> Self:
        """The same error (class, message, detail, attributes), without its traceback or cause.

        For answering again with an error remembered from an earlier request: raising the
        remembered one itself would grow its traceback on every request and keep the frames it
        was raised from, and everything they hold, alive.
        """
        twin = type(self).__new__(type(self))
        twin.__dict__.update(self.__dict__)
        twin.args = self.args
        return twin


# 400


class BadRequest(ServingError):
    code = "bad_request"


class MalformedBody(BadRequest):
    code = "malformed_body"


class InvalidTensor(BadRequest):
    """An Open Inference Protocol tensor contradicts itself (shape, datatype, data, bytes)."""

    code = "invalid_tensor"


# 401 / 403


class Unauthenticated(ServingError):
    code = "unauthenticated"


class Forbidden(ServingError):
    code = "forbidden"


# 404


class NotFound(ServingError):
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"

    def __init__(self, name: str, *, message: str | None = None) -> None:
        super().__init__(message or f"model '{name}' does not exist", detail={"model": name})


class VersionNotFound(NotFound):
    code = "version_not_found"

    def __init__(self, name: str, version: int) -> None:
        super().__init__(
            f"model '{name}' has no version {version}", detail={"model": name, "version": version}
        )


class AliasNotFound(NotFound):
    code = "alias_not_found"

    def __init__(self, name: str, alias: str) -> None:
        super().__init__(
            f"model '{name}' has no alias '{alias}'", detail={"model": name, "alias": alias}
        )


# 405 / 413


class MethodNotAllowed(ServingError):
    code = "method_not_allowed"


class PayloadTooLarge(ServingError):
    code = "payload_too_large"


# 422: the body parsed, but it does not fit the version's signature.


class InvalidInput(ServingError):
    code = "invalid_input"


class FeatureCountMismatch(InvalidInput):
    code = "feature_count_mismatch"


class FeatureTypeMismatch(InvalidInput):
    code = "feature_type_mismatch"


class MissingFeatures(InvalidInput):
    code = "missing_features"


class UnsupportedOutput(InvalidInput):
    code = "unsupported_output"


class PredictionRejected(InvalidInput):
    """The model itself refused the input (it raised ValueError or TypeError)."""

    code = "prediction_rejected"


# 500: the model failed in a way the input does not explain.


class PredictionFailed(ServingError):
    code = "prediction_failed"


# 502 / 503: something serving depends on is missing or down.


class RegistryRejected(ServingError):
    """The registry answered, but not in a way serving can use (bad token, bad contract)."""

    code = "registry_error"


class Unavailable(ServingError):
    code = "unavailable"


class RegistryUnavailable(Unavailable):
    code = "registry_unavailable"


class ModelUnavailable(Unavailable):
    """The alias or version exists, but no loaded version can answer it (yet)."""

    code = "model_unavailable"


class NotReady(Unavailable):
    code = "not_ready"


class LoadFailed(Unavailable):
    """Loading one version failed at `stage`; the version does not take traffic."""

    code = "load_failed"

    def __init__(
        self, name: str, version: int, *, stage: LoadStage, reason: str, transient: bool = False
    ) -> None:
        super().__init__(
            f"version {version} of model '{name}' failed to load at {stage}: {reason}",
            detail={"model": name, "version": version, "stage": stage},
        )
        self.model = name
        self.version = version
        self.stage: LoadStage = stage
        self.reason = reason
        # Transient failures (registry or store down) are retried at the feed's backoff; the
        # others only after `failed_retry_seconds`, since the same bytes fail the same way.
        self.transient = transient


HTTP_STATUS: dict[str, int] = {
    "internal_error": 500,
    "bad_request": 400,
    "malformed_body": 400,
    "invalid_tensor": 400,
    "unauthenticated": 401,
    "forbidden": 403,
    "not_found": 404,
    "model_not_found": 404,
    "version_not_found": 404,
    "alias_not_found": 404,
    "method_not_allowed": 405,
    "payload_too_large": 413,
    "invalid_input": 422,
    "feature_count_mismatch": 422,
    "feature_type_mismatch": 422,
    "missing_features": 422,
    "unsupported_output": 422,
    "prediction_rejected": 422,
    "prediction_failed": 500,
    "registry_error": 502,
    "unavailable": 503,
    "registry_unavailable": 503,
    "model_unavailable": 503,
    "not_ready": 503,
    "load_failed": 503,
}
"""The one table from error code to HTTP status. A test checks every error class is in it."""


def status_of(error: ServingError) -> int:
    return HTTP_STATUS.get(error.code, 500)


def error_body(error: ServingError) -> dict[str, Any]:
    """The one error shape of every Berth endpoint."""
    return {"error": error.code, "message": error.message, "detail": error.detail}
