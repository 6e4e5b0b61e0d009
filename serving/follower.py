"""Follows the registry's routing: a snapshot at start, then the change feed, forever.

The rules, each of which a test holds:
- Idempotent: a change whose revision is not above the one known for its alias is a no-op (the
  snapshot may already hold a change the feed then delivers again).
- Load first, swap after: every version a new revision needs is loaded, verified and warmed
  before the routing table changes, and the change is one reference assignment.
- A revision that cannot load never replaces a working one: the alias keeps serving its old
  revision, the failure is recorded, and the new revision is retried (soon when the failure was
  an outage, after `failed_retry_seconds` when the bytes themselves were bad).
- Never skip a change: the feed position only advances past changes that were recorded as
  wanted; outages end in a catch-up from the last position, with capped, jittered backoff.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from registry.schemas import Change, ChangesOut, RoutingEntry, RoutingSnapshot
from serving.cache import ModelCache, VersionKey
from serving.errors import LoadFailed, NotFound, RegistryUnavailable, ServingError
from serving.loader import LoadedModel
from serving.metrics import ServingMetrics
from serving.registry_client import StaleFeedPosition
from serving.routing import AliasKey, Route, Router

logger = logging.getLogger(__name__)


class FeedSource(Protocol):
    async def routing(self) -> RoutingSnapshot: ...

    async def changes(self, *, after: int, wait: float, limit: int) -> ChangesOut: ...


@dataclass(frozen=True, slots=True)
class AliasSpec:
    """One revision of an alias as serving needs it."""

    model: str
    alias: str
    revision: int
    variants: tuple[tuple[int, int], ...]
    shadow: tuple[int, ...]
    deleted: bool = False

    @property
    def key(self) -> AliasKey:
        return (self.model, self.alias)

    def needed(self) -> list[int]:
        """Versions to load: variants that take traffic, and shadows."""
        return sorted({v for v, w in self.variants if w > 0} | set(self.shadow))

    @classmethod
    def of(cls, item: RoutingEntry | Change) -> AliasSpec:
        return cls(
            model=item.model,
            alias=item.alias,
            revision=item.revision,
            variants=tuple((v.version, v.weight) for v in item.variants),
            shadow=tuple(item.shadow),
            deleted=isinstance(item, Change) and item.deleted,
        )


@dataclass(frozen=True, slots=True)
class FollowerOptions:
    feed_wait_seconds: float = 30.0
    feed_limit: int = 500
    backoff_min_seconds: float = 0.2
    backoff_max_seconds: float = 10.0
    failed_retry_seconds: float = 300.0


class Backoff:
    """Capped exponential backoff with jitter: replicas that lost the registry together do not
    all come back in the same millisecond."""

    def __init__(self, low: float, high: float) -> None:
        self._low = low
        self._high = high
        self.attempts = 0

    def next(self) -> float:
        cap = min(self._high, self._low * 2.0 ** min(self.attempts, 32))
        self.attempts += 1
        return cap / 2 + random.uniform(0, cap / 2)

    def reset(self) -> None:
        self.attempts = 0


@dataclass(slots=True)
class _Retry:
    at: float
    backoff: Backoff
    permanent: bool


class Follower:
    def __init__(
        self,
        source: FeedSource,
        cache: ModelCache,
        router: Router[LoadedModel],
        *,
        options: FollowerOptions,
        metrics: ServingMetrics | None = None,
        on_swap: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = source
        self._cache = cache
        self._router = router
        self._options = options
        self._metrics = metrics
        self._on_swap = on_swap
        self._clock = clock
        self.position: int | None = None
        self.head = 0
        """The newest feed position the registry has reported."""
        self.desired: dict[AliasKey, AliasSpec] = {}
        """The latest revision known per alias (deleted ones kept as tombstones)."""
        self.live: dict[AliasKey, AliasSpec] = {}
        """The revision the routing table serves per alias."""
        self._retries: dict[VersionKey, _Retry] = {}
        self.connected = False
        self.synced_at: float | None = None
        self.started_at = clock()
        self.settled = asyncio.Event()
        """Set once the first snapshot was applied and each of its loads succeeded or failed."""

    # --- state for status, readiness and heartbeats ------------------------------------------

    def behind(self) -> int:
        """How many feed positions the registry has that this replica has not applied."""
        return max(0, self.head - (self.position or 0))

    def lag_seconds(self) -> float:
        """0 while the feed is connected, else seconds since this replica last had every change."""
        if self.connected:
            return 0.0
        return self._clock() - (self.synced_at if self.synced_at is not None else self.started_at)

    def pending(self) -> dict[AliasKey, AliasSpec]:
        """Aliases whose latest revision is not (yet) the one served."""
        return {
            key: spec
            for key, spec in self.desired.items()
            if not spec.deleted
            and (key not in self.live or self.live[key].revision != spec.revision)
        }

    def waiting_on_outage(self, key: AliasKey) -> bool:
        """The alias is pending only because a load hit an outage (retried at backoff)."""
        spec = self.desired.get(key)
        if spec is None or spec.deleted:
            return False
        retries = [self._retries.get((spec.model, v)) for v in spec.needed()]
        failed = [r for r in retries if r is not None]
        return bool(failed) and not any(r.permanent for r in failed)

    # --- the loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Follow the registry until cancelled. Never raises anything but cancellation."""
        backoff = Backoff(self._options.backoff_min_seconds, self._options.backoff_max_seconds)
        while True:
            try:
                if self.position is None:
                    await self.sync_snapshot()
                else:
                    await self.poll()
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except StaleFeedPosition as exc:
                logger.warning("%s; taking a new snapshot", exc.message)
                self.position = None
            except ServingError as exc:
                self._disconnected()
                delay = backoff.next()
                logger.warning("routing feed: %s; retrying in %.1f s", exc.message, delay)
                await asyncio.sleep(delay)
            except Exception:
                self._disconnected()
                delay = backoff.next()
                logger.exception("routing feed failed unexpectedly; retrying in %.1f s", delay)
                await asyncio.sleep(delay)

    def _disconnected(self) -> None:
        self.connected = False
        if self._metrics is not None:
            self._metrics.feed_errors.inc()

    def _synced(self, position: int) -> None:
        self.connected = True
        self.synced_at = self._clock()
        self.position = position
        if self._metrics is not None:
            self._metrics.feed_position.set(position)

    async def sync_snapshot(self) -> None:
        """Take the routing snapshot and reconcile to it (also drops aliases it no longer has)."""
        snapshot = await self._source.routing()
        self.connected = True
        specs = [AliasSpec.of(entry) for entry in snapshot.aliases]
        present = {spec.key for spec in specs}
        for key, known in list(self.desired.items()):
            if key not in present and not known.deleted:
                # Gone from the registry while we were not following: a tombstone at the known
                # revision, so a stale replay of an older change cannot resurrect it.
                self.desired[key] = AliasSpec(
                    model=key[0],
                    alias=key[1],
                    revision=known.revision,
                    variants=(),
                    shadow=(),
                    deleted=True,
                )
        self.record(specs)
        await self.reconcile()
        self.head = max(self.head, snapshot.position)
        self._synced(snapshot.position)
        self.settled.set()

    async def poll(self) -> None:
        """Retry what is due, then one long-poll of the feed and apply what it returned."""
        await self.reconcile()
        assert self.position is not None
        out = await self._source.changes(
            after=self.position, wait=self._wait(), limit=self._options.feed_limit
        )
        self.connected = True
        self.head = max(self.head, out.head)
        self.record(AliasSpec.of(change) for change in out.changes)
        await self.reconcile()
        self._synced(max(out.position, self.position))

    def _wait(self) -> int:
        wait = self._options.feed_wait_seconds
        due = [r.at for r in self._retries.values()]
        if due:
            wait = min(wait, max(0.0, min(due) - self._clock()))
        # Whole seconds: the registry need not accept fractions, and sub-second retry
        # precision buys nothing.
        return math.ceil(wait)

    # --- applying -----------------------------------------------------------------------------

    def record(self, specs: Iterable[AliasSpec]) -> None:
        """Remember each spec newer than what is known for its alias; older ones are no-ops."""
        for spec in specs:
            known = self.desired.get(spec.key)
            if known is not None and spec.revision <= known.revision:
                continue
            self.desired[spec.key] = spec

    async def reconcile(self) -> None:
        """Load what pending revisions need, then swap in every one that loaded, at once.

        A revision that needs a version whose retry is not due yet waits for it.
        """
        now = self._clock()
        candidates: list[AliasSpec] = []
        wanted: dict[VersionKey, None] = {}
        for key, spec in self.desired.items():
            live = self.live.get(key)
            if spec.deleted:
                if live is not None:
                    candidates.append(spec)
                continue
            if live is not None and live.revision == spec.revision:
                continue
            keys = [(spec.model, v) for v in spec.needed()]
            if any(k not in self._cache and self._retry_not_due(k, now) for k in keys):
                continue
            candidates.append(spec)
            wanted.update(dict.fromkeys(keys))
        if not candidates:
            self._publish_pending()
            return

        loaded = await self._load_all(list(wanted))

        table = dict(self._router.table)
        served = dict(self.live)
        swapped: list[AliasSpec] = []
        for spec in candidates:
            if spec.deleted:
                table.pop(spec.key, None)
                served.pop(spec.key, None)
                swapped.append(spec)
                continue
            needed = [(spec.model, v) for v in spec.needed()]
            if any(k not in loaded for k in needed):
                continue  # the old revision keeps serving; the failure is recorded
            models = {v: loaded[(spec.model, v)] for v in spec.needed()}
            table[spec.key] = Route.build(
                model=spec.model,
                alias=spec.alias,
                revision=spec.revision,
                variants=[(v, w, models[v]) for v, w in spec.variants if w > 0],
                shadows=[(v, models[v]) for v in spec.shadow],
            )
            served[spec.key] = spec
            swapped.append(spec)
        if swapped:
            # The swap: requests that already took the old table finish on it.
            self._router.table = table
            self.live = served
            self._cache.hold(
                model for route in table.values() for model in (*route.targets, *route.shadows)
            )
            for spec in swapped:
                logger.info(
                    "alias %s of model %s now serves revision %s%s",
                    spec.alias,
                    spec.model,
                    spec.revision,
                    " (deleted)" if spec.deleted else f" {dict(spec.variants)}",
                )
                if self._metrics is not None:
                    self._metrics.swaps.labels(spec.model, spec.alias).inc()
        self._publish_pending()
        if swapped and self._on_swap is not None:
            self._on_swap()

    def _retry_not_due(self, key: VersionKey, now: float) -> bool:
        retry = self._retries.get(key)
        return retry is not None and retry.at > now

    async def _load_all(self, keys: list[VersionKey]) -> dict[VersionKey, LoadedModel]:
        results = await asyncio.gather(
            *(self._cache.get_or_load(*key) for key in keys), return_exceptions=True
        )
        loaded: dict[VersionKey, LoadedModel] = {}
        now = self._clock()
        for key, result in zip(keys, results, strict=True):
            if isinstance(result, LoadedModel):
                loaded[key] = result
                self._retries.pop(key, None)
            elif isinstance(result, asyncio.CancelledError):
                raise result
            else:
                self._schedule_retry(key, result, now)
        return loaded

    def _schedule_retry(self, key: VersionKey, error: BaseException, now: float) -> None:
        transient = isinstance(error, LoadFailed) and error.transient
        transient = transient or isinstance(error, RegistryUnavailable)
        if not isinstance(error, LoadFailed | NotFound):
            logger.error("loading %s v%s failed: %r", *key, error)
        retry = self._retries.get(key)
        if retry is None:
            retry = _Retry(
                at=now,
                backoff=Backoff(
                    self._options.backoff_min_seconds, self._options.backoff_max_seconds
                ),
                permanent=False,
            )
            self._retries[key] = retry
        retry.permanent = not transient
        delay = retry.backoff.next() if transient else self._options.failed_retry_seconds
        retry.at = now + delay

    def _publish_pending(self) -> None:
        pending = self.pending()
        # Forget retries no pending revision needs: they would only shorten the feed's wait.
        needed = {(spec.model, v) for spec in pending.values() for v in spec.needed()}
        for version_key in [k for k in self._retries if k not in needed]:
            del self._retries[version_key]
        reasons: dict[AliasKey, str] = {}
        for key, spec in pending.items():
            failed = [v for v in spec.needed() if (spec.model, v) in self._retries]
            reasons[key] = (
                f"revision {spec.revision} needs versions {failed} that failed to load"
                if failed
                else f"revision {spec.revision} is loading"
            )
        self._router.pending = reasons
        if self._metrics is not None:
            self._metrics.pending_aliases.set(len(pending))

    def served(self) -> Mapping[AliasKey, AliasSpec]:
        return self.live
