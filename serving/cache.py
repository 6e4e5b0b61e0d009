"""Versioned model cache keyed by (model, version).

- Single flight: concurrent requests for a version that is not loaded share ONE load.
- A failed load leaves no entry: the next request tries again.
- Versions behind an alias are *held* and never evicted; the others (pinned requests, versions an
  alias moved away from) live in an LRU of at most `max_unheld` entries.

`Refusals` is the other side: the errors of versions that did not load, remembered for a while,
so that whoever asks again is answered without another download. `ModelCache` keeps none of
them: the follower, which loads through it too, has its own retry policy.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable

from serving.errors import ServingError
from serving.loader import LoadedModel

VersionKey = tuple[str, int]


class ModelCache:
    def __init__(
        self,
        load: Callable[[str, int], Awaitable[LoadedModel]],
        *,
        max_unheld: int,
        on_evict: Callable[[LoadedModel], None] | None = None,
    ) -> None:
        self._load = load
        self._max_unheld = max_unheld
        self._on_evict = on_evict
        self._entries: OrderedDict[VersionKey, LoadedModel] = OrderedDict()
        self._held: set[VersionKey] = set()
        self._loading: dict[VersionKey, asyncio.Future[LoadedModel]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: VersionKey) -> bool:
        return key in self._entries

    def entries(self) -> list[LoadedModel]:
        return list(self._entries.values())

    def is_held(self, key: VersionKey) -> bool:
        return key in self._held

    def loading(self) -> list[VersionKey]:
        return list(self._loading)

    def get(self, name: str, version: int) -> LoadedModel | None:
        """The loaded version or None; counts as a use for the LRU. Never loads."""
        key = (name, version)
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
        return found

    async def get_or_load(self, name: str, version: int) -> LoadedModel:
        """The loaded version, loading it first if needed; concurrent callers share one load.

        The load runs in its own task: a caller that gives up (client gone, timeout) does not
        cancel it for the others.
        """
        found = self.get(name, version)
        if found is not None:
            return found
        key = (name, version)
        future = self._loading.get(key)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._loading[key] = future
            task = asyncio.create_task(self._fill(key, future), name=f"load {name} v{version}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await asyncio.shield(future)

    async def _fill(self, key: VersionKey, future: asyncio.Future[LoadedModel]) -> None:
        try:
            model = await self._load(*key)
        except asyncio.CancelledError:
            self._loading.pop(key, None)
            future.cancel()
            raise
        except Exception as exc:
            self._loading.pop(key, None)
            if not future.done():
                future.set_exception(exc)
                # Every waiter may have gone; the failure is reported where it was recorded.
                future.exception()
            return
        self._loading.pop(key, None)
        self._entries[key] = model
        self._entries.move_to_end(key)
        self._evict()
        if not future.done():
            future.set_result(model)

    def hold(self, models: Iterable[LoadedModel]) -> None:
        """Make exactly these versions the held set (the ones every alias serves).

        They are (re)inserted if the LRU dropped them while a batch of loads was in flight; the
        ones no longer held become the most recently used of the LRU, so a rollback is instant
        unless enough other versions were used since.
        """
        new_held: set[VersionKey] = set()
        for model in models:
            key = (model.name, model.version)
            new_held.add(key)
            if self._entries.get(key) is not model:
                self._entries[key] = model
        for key in self._held - new_held:
            if key in self._entries:
                self._entries.move_to_end(key)
        self._held = new_held
        self._evict()

    def _evict(self) -> None:
        unheld = [k for k in self._entries if k not in self._held]
        excess = len(unheld) - self._max_unheld
        for key in unheld[: max(excess, 0)]:
            evicted = self._entries.pop(key)
            if self._on_evict is not None:
                self._on_evict(evicted)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class Refusals:
    """Errors by version, each answered again until its own expiry; at most `size`, LRU.

    Bounded in entries, not only in time: version numbers come from URLs, and each distinct one
    the registry lacks would otherwise be an entry.
    """

    def __init__(self, *, size: int = 1024, clock: Callable[[], float] = time.monotonic) -> None:
        self._size = size
        self._clock = clock
        self._entries: OrderedDict[VersionKey, tuple[float, ServingError]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: VersionKey) -> ServingError | None:
        """A fresh copy of the error remembered for `key` to raise, or None once expired."""
        found = self._entries.get(key)
        if found is None:
            return None
        until, error = found
        if self._clock() >= until:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return error.replay()

    def remember(self, key: VersionKey, error: ServingError, *, seconds: float) -> None:
        """Answer `key` with `error` for the next `seconds`, dropping the least recently used."""
        self._entries[key] = (self._clock() + seconds, error.replay())
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)
