"""The registry's error tree.

Every error the registry raises on purpose derives from `RegistryError` and carries a semantic
`code`; `HTTP_STATUS` is the one table that maps codes to statuses. Nothing here imports FastAPI:
the API layer does the translation.
"""

from __future__ import annotations

from typing import Any, ClassVar


class RegistryError(Exception):
    """Root of every error the registry raises on purpose."""

    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, *, detail: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


# 400


class BadRequest(RegistryError):
    code = "bad_request"


class InvalidCursor(BadRequest):
    code = "invalid_cursor"


# 401 / 403


class Unauthenticated(RegistryError):
    code = "unauthenticated"


class Forbidden(RegistryError):
    code = "forbidden"


# 404


class NotFound(RegistryError):
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"

    def __init__(self, name: str) -> None:
        super().__init__(f"model '{name}' does not exist", detail={"model": name})


class VersionNotFound(NotFound):
    code = "version_not_found"

    def __init__(self, name: str, version: int) -> None:
        super().__init__(
            f"model '{name}' has no version {version}", detail={"model": name, "version": version}
        )


class FileNotFound(NotFound):
    code = "file_not_found"

    def __init__(self, name: str, version: int, file: str) -> None:
        super().__init__(
            f"version {version} of model '{name}' has no file '{file}'",
            detail={"model": name, "version": version, "file": file},
        )


class AliasNotFound(NotFound):
    code = "alias_not_found"

    def __init__(self, name: str, alias: str) -> None:
        super().__init__(
            f"model '{name}' has no alias '{alias}'", detail={"model": name, "alias": alias}
        )


class RevisionNotFound(NotFound):
    code = "revision_not_found"


class TokenNotFound(NotFound):
    code = "token_not_found"


class ReplicaNotFound(NotFound):
    code = "replica_not_found"


# 409


class Conflict(RegistryError):
    code = "conflict"


class ModelExists(Conflict):
    code = "model_exists"

    def __init__(self, name: str) -> None:
        super().__init__(f"model '{name}' already exists", detail={"model": name})


class RevisionMismatch(Conflict):
    code = "revision_mismatch"


class VersionInUse(Conflict):
    code = "version_in_use"


class NothingToRollBack(Conflict):
    code = "nothing_to_roll_back"


# 413 / 415


class PayloadTooLarge(RegistryError):
    code = "payload_too_large"


class UnsupportedMediaType(RegistryError):
    code = "unsupported_media_type"


# 422


class InvalidInput(RegistryError):
    code = "invalid_input"


class DigestMismatch(InvalidInput):
    code = "digest_mismatch"


class VersionArchived(InvalidInput):
    code = "version_archived"


class UnknownVersion(InvalidInput):
    """A request body names a version that does not exist (the URL was fine, so not 404)."""

    code = "unknown_version"


class UnsafeArtifact(InvalidInput):
    code = "unsafe_artifact"


class ArtifactMissing(RegistryError):
    """A version row whose object is gone from the store: an integrity failure, not bad input."""

    code = "artifact_missing"


# Never the answer to a request: raised while a process starts or an operator runs a command.


class Misconfigured(RegistryError):
    """The installation cannot start as configured: a database URL no installed driver speaks,
    a data directory that cannot be created, an artifact store scheme Berth does not know, a
    schema behind the code, a migration target that does not exist."""

    code = "misconfigured"


# 503


class Unavailable(RegistryError):
    code = "unavailable"


class DatabaseUnavailable(Unavailable):
    code = "database_unavailable"


class StorageUnavailable(Unavailable):
    code = "storage_unavailable"


HTTP_STATUS: dict[str, int] = {
    "internal_error": 500,
    "artifact_missing": 500,
    "misconfigured": 500,
    "bad_request": 400,
    "invalid_cursor": 400,
    "unauthenticated": 401,
    "forbidden": 403,
    "not_found": 404,
    "model_not_found": 404,
    "version_not_found": 404,
    "file_not_found": 404,
    "alias_not_found": 404,
    "revision_not_found": 404,
    "token_not_found": 404,
    "replica_not_found": 404,
    "conflict": 409,
    "model_exists": 409,
    "revision_mismatch": 409,
    "version_in_use": 409,
    "nothing_to_roll_back": 409,
    "payload_too_large": 413,
    "unsupported_media_type": 415,
    "invalid_input": 422,
    "digest_mismatch": 422,
    "version_archived": 422,
    "unknown_version": 422,
    "unsafe_artifact": 422,
    "unavailable": 503,
    "database_unavailable": 503,
    "storage_unavailable": 503,
}
"""The one table from error code to HTTP status. A test checks every error class is in it."""
