"""Alias → weighted variants, and the routing table the predict path reads.

Sticky routing: a routing key hashes to a point in [0, 1); variants own consecutive slices of
that interval in ascending version order, each as wide as its share of the weight. The order is
fixed by version, not by the order the spec lists them, so changing weights only moves the
boundaries between slices: a key changes variant only if a boundary crossed its point
(90/10 → 80/20 moves the keys in [0.8, 0.9), about 10%, and no other).
"""

from __future__ import annotations

import hashlib
import random
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")

AliasKey = tuple[str, str]
"""(model name, alias name)."""

_SCALE = float(2**64)


def route_salt(model: str, alias: str) -> bytes:
    """Salt of an alias's key hash, so that two experiments do not split users identically."""
    return hashlib.blake2b(f"{model}\0{alias}".encode(), digest_size=16).digest()


def key_point(salt: bytes, key: str) -> float:
    """Map a routing key to a point in [0, 1), the same on every replica and every restart."""
    digest = hashlib.blake2b(
        key.encode("utf-8", "surrogatepass"), digest_size=8, person=b"berth-route", salt=salt
    ).digest()
    return int.from_bytes(digest, "big") / _SCALE


@dataclass(frozen=True, slots=True)
class Route(Generic[T]):
    """One alias revision with what serves it: immutable, replaced whole on every change."""

    model: str
    alias: str
    revision: int
    targets: tuple[T, ...]
    """The live variants with a positive weight, in ascending version order."""
    bounds: tuple[float, ...]
    """Upper end of each target's slice of [0, 1); the last is 1.0."""
    weights: tuple[tuple[int, int], ...]
    """(version, weight) of every variant as the spec gave it, zero weights included."""
    shadows: tuple[T, ...] = ()
    shadow_versions: tuple[int, ...] = ()
    _salt: bytes = field(default=b"", repr=False)

    @classmethod
    def build(
        cls,
        *,
        model: str,
        alias: str,
        revision: int,
        variants: Iterable[tuple[int, int, T]],
        shadows: Iterable[tuple[int, T]] = (),
    ) -> Route[T]:
        """Build a route from (version, weight, target) triples; at least one weight positive."""
        ordered = sorted(variants, key=lambda v: v[0])
        live = [v for v in ordered if v[1] > 0]
        if not live:
            raise ValueError(f"alias '{alias}' of model '{model}' has no variant with weight > 0")
        total = sum(w for _, w, _ in live)
        bounds: list[float] = []
        running = 0
        for _, weight, _ in live:
            running += weight
            bounds.append(running / total)
        bounds[-1] = 1.0  # no key may fall past the last slice through rounding
        shadow_list = sorted(shadows, key=lambda s: s[0])
        return cls(
            model=model,
            alias=alias,
            revision=revision,
            targets=tuple(t for _, _, t in live),
            bounds=tuple(bounds),
            weights=tuple((v, w) for v, w, _ in ordered),
            shadows=tuple(t for _, t in shadow_list),
            shadow_versions=tuple(v for v, _ in shadow_list),
            _salt=route_salt(model, alias),
        )

    def pick(self, routing_key: str | None) -> T:
        """The target for a request: sticky by key when one is given, random by weight if not."""
        targets = self.targets
        if len(targets) == 1:
            return targets[0]
        point = random.random() if routing_key is None else key_point(self._salt, routing_key)
        return targets[bisect_right(self.bounds, point)]


RoutingTable = Mapping[AliasKey, Route[T]]


@dataclass(slots=True)
class Router(Generic[T]):
    """Holds the current routing table; the follower replaces it with one assignment.

    Readers take `router.table` once per request and use that table for the whole request, so a
    request in flight finishes on the version it started with, whatever swaps meanwhile.
    """

    table: Mapping[AliasKey, Route[T]] = field(default_factory=dict)
    pending: Mapping[AliasKey, str] = field(default_factory=dict)
    """Aliases the registry has but this replica cannot serve yet, with the reason (for errors)."""

    def knows_model(self, model: str) -> bool:
        """Whether any alias of `model` routes here or waits to; a scan, for error answers only."""
        return any(m == model for m, _ in self.table) or any(m == model for m, _ in self.pending)
