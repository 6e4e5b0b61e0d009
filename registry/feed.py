"""Waking long-polling readers of the change feed and of replica rollouts.

Three sources move a `Signal` forward, fastest first: a commit in this process, a Postgres NOTIFY
from another registry process, and a poll of the database as the fallback that catches whatever
the first two missed. Waiters sit on the event loop; no thread is held while they wait.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

import psycopg

from registry import repository as repo
from registry.db import Database

log = logging.getLogger(__name__)

T = TypeVar("T")


class Signal:
    """A monotonically increasing position that coroutines can wait to pass.

    `advance` may be called from any thread; waiting happens on the loop given to `bind`.
    """

    def __init__(self) -> None:
        self._position = 0
        self._waiters = 0
        self._event = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    @property
    def position(self) -> int:
        return self._position

    @property
    def waiters(self) -> int:
        """Coroutines waiting right now (long-polls parked on this signal)."""
        return self._waiters

    def advance(self, position: int) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._advance(position)
        else:
            loop.call_soon_threadsafe(self._advance, position)

    def _advance(self, position: int) -> None:
        if position <= self._position:
            return
        self._position = position
        event, self._event = self._event, asyncio.Event()
        event.set()

    def pulse(self) -> None:
        """Wake every waiter without a new position (they re-check their own condition)."""
        self.advance(self._position + 1)

    async def wait_past(self, after: int, timeout: float) -> bool:  # noqa: ASYNC109
        """Wait until the position exceeds `after`; False if `timeout` passes first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._waiters += 1
        try:
            while self._position <= after:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return False
                try:
                    await asyncio.wait_for(self._event.wait(), remaining)
                except TimeoutError:
                    return False
            return True
        finally:
            self._waiters -= 1


class SharedReads(Generic[T]):
    """One database read for every request that asks the same question at the same moment.

    A promotion wakes every replica's long-poll at once, all asking for the changes after the
    same position. Without sharing, each would take a pooled connection for the same query, so
    the registry's Postgres connections and its database work would grow with the number of
    serving replicas; shared, they grow with the number of distinct positions (usually one).
    A read that finished is never reused: the next request for that key reads afresh.
    """

    def __init__(self) -> None:
        self._in_flight: dict[Hashable, asyncio.Future[T]] = {}

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    async def read(self, key: Hashable, fetch: Callable[[], Awaitable[T]]) -> T:
        found = self._in_flight.get(key)
        if found is not None:
            # shield: a waiter that gives up (its client left) must not cancel the others' read.
            return await asyncio.shield(found)
        task = asyncio.ensure_future(fetch())
        self._in_flight[key] = task
        task.add_done_callback(lambda _: self._in_flight.pop(key, None))
        return await asyncio.shield(task)


class FeedWatcher:
    """A background thread that advances the feed signal from outside this process.

    On Postgres it LISTENs for the NOTIFY each alias change sends at commit, polling the counter
    between notifications; on SQLite (one process by design) it only polls.
    """

    def __init__(
        self,
        database: Database,
        signal: Signal,
        *,
        poll_seconds: float,
        on_poll: Callable[[], None] | None = None,
    ) -> None:
        self._database = database
        self._signal = signal
        self._poll = poll_seconds
        self._on_poll = on_poll
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="berth-feed-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                if self._database.dialect == "postgresql":
                    self._listen()
                else:
                    self._poll_once()
                    self._stop.wait(self._poll)
                backoff = 0.5
            except Exception as exc:  # the watcher must outlive any database outage
                log.warning("feed watcher: %s; retrying in %.1fs", exc, backoff)
                self._stop.wait(backoff * (1 + random.random()))
                backoff = min(backoff * 2, 10.0)

    def _poll_once(self) -> None:
        with self._database.transaction(write=False) as session:
            self._signal.advance(repo.feed_position(session))
        if self._on_poll is not None:
            self._on_poll()

    def _listen(self) -> None:
        url = self._database.url.set(drivername="postgresql")
        conninfo = url.render_as_string(hide_password=False)
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"LISTEN {repo.FEED_CHANNEL}")
            # Read the counter after LISTEN: a change committed in between is then seen by one or
            # the other, never by neither.
            self._poll_once()
            next_poll = time.monotonic() + self._poll
            while not self._stop.is_set():
                # Short slices so stop() is prompt; the counter is polled once per interval.
                for notify in conn.notifies(timeout=min(self._poll, 0.5)):
                    if notify.payload.isdigit():
                        self._signal.advance(int(notify.payload))
                if time.monotonic() >= next_poll:
                    self._poll_once()
                    next_poll = time.monotonic() + self._poll
