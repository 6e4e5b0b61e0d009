"""Berth's user surface: the Python client (`berth.Client`) and the `berth` CLI."""

from berth.client import DEFAULT_ALIAS, DEFAULT_URL, Client, Prediction
from berth.errors import (
    BadRequest,
    BerthError,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    RolloutTimeout,
    ServerError,
    Unauthenticated,
    Unavailable,
    Unreachable,
)

__all__ = [
    "DEFAULT_ALIAS",
    "DEFAULT_URL",
    "BadRequest",
    "BerthError",
    "Client",
    "Conflict",
    "Forbidden",
    "InvalidInput",
    "NotFound",
    "PayloadTooLarge",
    "Prediction",
    "RolloutTimeout",
    "ServerError",
    "Unauthenticated",
    "Unavailable",
    "Unreachable",
]
