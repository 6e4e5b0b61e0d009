"""Safe model loading: decide whether an artifact may be deserialised, without deserialising it.

A leaf package: it imports neither `registry` nor `serving`; both use it, the registry when an
artifact is uploaded and serving again right before it loads one.
"""

from safety.allowlist import POLICY, is_allowed
from safety.artifacts import (
    PICKLE_FLAVORS,
    SKOPS_FLAVORS,
    Inspection,
    Kind,
    check,
    inspect_file,
    inspect_stream,
)
from safety.background import BackgroundInspection
from safety.errors import Reason, UnsafeArtifact

__all__ = [
    "PICKLE_FLAVORS",
    "POLICY",
    "SKOPS_FLAVORS",
    "BackgroundInspection",
    "Inspection",
    "Kind",
    "Reason",
    "UnsafeArtifact",
    "check",
    "inspect_file",
    "inspect_stream",
    "is_allowed",
]
