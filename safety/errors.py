"""The one error a rejected artifact raises, and why it was rejected."""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Why an artifact was rejected; services map every reason to the same 422."""

    disallowed_global = "disallowed_global"
    """The pickle names a global (class or function) that is not on the allow-list."""
    unsafe_construct = "unsafe_construct"
    """A construct honest models never use and the scanner refuses to reason about: a call of a
    computed value, persistent ids, the extension registry, state set on a class."""
    malformed = "malformed"
    """The bytes stop being a valid pickle at this point (the unpickler would fail here too)."""
    uninspectable = "uninspectable"
    """Compressed with something the scanner cannot open, or a format it cannot see into."""
    limit = "limit"
    """Bigger or deeper than the scanner's bounds (memo, stack, frame, nesting, expansion)."""
    untrusted_type = "untrusted_type"
    """A skops file names a type outside the allow-list."""
    wrong_format = "wrong_format"
    """The bytes are not in the format the flavor promises."""


class UnsafeArtifact(Exception):
    """The artifact cannot be shown safe to load; `global_name` names the offender if one did."""

    def __init__(
        self,
        message: str,
        *,
        reason: Reason,
        global_name: str | None = None,
        offset: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.global_name = global_name
        self.offset = offset

    def detail(self) -> dict[str, str | int]:
        """What an API error body carries: JSON-safe, no stack, no bytes of the artifact."""
        out: dict[str, str | int] = {"reason": self.reason.value}
        if self.global_name is not None:
            out["global"] = self.global_name
        if self.offset is not None:
            out["offset"] = self.offset
        return out
