from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from registry.schemas import ChangesOut, RoutingSnapshot
from serving.cache import ModelCache
from serving.errors import LoadFailed, RegistryUnavailable
from serving.follower import AliasSpec, Follower, FollowerOptions
from serving.loader import LoadedModel
from serving.routing import Router
from tests.serving.fakes import FakeRegistry
from tests.serving.test_cache import model

FAST = FollowerOptions(
    feed_wait_seconds=1, backoff_min_seconds=0.01, backoff_max_seconds=0.05, failed_retry_seconds=60
)


class Feed:
    """The follower's view of the registry over a FakeRegistry's state, with an outage switch."""

    def __init__(self, registry: FakeRegistry) -> None:
        self.registry = registry
        self.down = False
        self.calls = Counter[str]()
        self.stale_snapshot_position: int | None = None

    async def routing(self) -> RoutingSnapshot:
        self.calls["routing"] += 1
        if self.down:
            raise RegistryUnavailable("registry is down")
        with self.registry.lock:
            position = len(self.registry.changes)
            if self.stale_snapshot_position is not None:
                # The snapshot read its position before the aliases: some changes are in both.
                position = self.stale_snapshot_position
            return RoutingSnapshot(position=position, aliases=list(self.registry.aliases.values()))

    async def changes(self, *, after: int, wait: float, limit: int) -> ChangesOut:
        self.calls["changes"] += 1
        if self.down:
            await asyncio.sleep(0.01)
            raise RegistryUnavailable("registry is down")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(wait, 0.2)
        while True:
            with self.registry.lock:
                found = self.registry.changes[after : after + limit]
            if self.down:
                raise RegistryUnavailable("registry went away")
            if found or loop.time() >= deadline:
                return ChangesOut(changes=found, position=found[-1].seq if found else after)
            await asyncio.sleep(0.005)


class Loads:
    def __init__(self) -> None:
        self.calls = Counter[tuple[str, int]]()
        self.failing: dict[tuple[str, int], LoadFailed] = {}

    async def __call__(self, name: str, version: int) -> LoadedModel:
        self.calls[(name, version)] += 1
        await asyncio.sleep(0)
        failure = self.failing.get((name, version))
        if failure is not None:
            raise failure
        return model(name, version)


class World:
    def __init__(self, options: FollowerOptions = FAST) -> None:
        self.registry = FakeRegistry()
        self.feed = Feed(self.registry)
        self.loads = Loads()
        self.cache = ModelCache(self.loads, max_unheld=2)
        self.router: Router[LoadedModel] = Router()
        self.swaps = 0
        self.follower = Follower(
            self.feed, self.cache, self.router, options=options, on_swap=self._swapped
        )

    def _swapped(self) -> None:
        self.swaps += 1

    def serving(
        self, name: str = "churn", alias: str = "production"
    ) -> tuple[int, list[int]] | None:
        route = self.router.table.get((name, alias))
        if route is None:
            return None
        return route.revision, [m.version for m in route.targets]


async def until(condition: Callable[[], bool], deadline_seconds: float = 5.0) -> None:
    """Wait for a condition with a generous deadline; the deadline failing is the test failing."""
    async with asyncio.timeout(deadline_seconds):
        while True:
            if condition():
                return
            await asyncio.sleep(0.01)


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())


def test_snapshot_then_feed_swaps_each_promotion_in() -> None:
    async def scenario() -> None:
        world = World()
        world.registry.set_alias("churn", "production", 1)
        await world.follower.sync_snapshot()
        assert world.serving() == (1, [1])
        assert world.follower.settled.is_set()
        world.registry.set_alias("churn", "production", 2)
        await world.follower.poll()
        assert world.serving() == (2, [2])
        assert world.follower.position == 2
        assert world.swaps == 2
        assert world.cache.is_held(("churn", 2))
        assert not world.cache.is_held(("churn", 1))

    run(scenario)


def test_applying_is_idempotent_by_revision() -> None:
    async def scenario() -> None:
        world = World()
        world.registry.set_alias("churn", "production", 1)
        world.registry.set_alias("churn", "production", 2)
        # The snapshot already holds revision 2, but says position 1: the feed replays rev 2.
        world.feed.stale_snapshot_position = 1
        await world.follower.sync_snapshot()
        assert world.serving() == (2, [2])
        swaps = world.swaps
        await world.follower.poll()
        assert world.follower.position == 2
        assert world.serving() == (2, [2])
        assert world.swaps == swaps
        assert world.loads.calls == {("churn", 2): 1}
        # An older revision arriving late is a no-op too.
        world.follower.record([AliasSpec("churn", "production", 1, ((1, 100),), ())])
        await world.follower.reconcile()
        assert world.serving() == (2, [2])

    run(scenario)


def test_a_failing_version_never_replaces_a_working_one() -> None:
    async def scenario() -> None:
        world = World()
        world.registry.set_alias("churn", "production", 1)
        await world.follower.sync_snapshot()
        world.loads.failing[("churn", 2)] = LoadFailed(
            "churn", 2, stage="digest", reason="sha256 differs"
        )
        world.registry.set_alias("churn", "production", 2)
        await world.follower.poll()
        assert world.serving() == (1, [1])
        assert world.follower.position == 2  # the change is recorded, not skipped
        assert world.follower.pending()[("churn", "production")].revision == 2
        assert "[2] that failed to load" in world.router.pending[("churn", "production")]
        # Bad bytes are not downloaded again on every poll.
        await world.follower.poll()
        assert world.loads.calls[("churn", 2)] == 1
        # A rollback to the working version clears the pending state.
        world.registry.set_alias("churn", "production", 1)
        await world.follower.poll()
        assert world.serving() == (3, [1])
        assert world.follower.pending() == {}
        assert world.router.pending == {}

    run(scenario)


def test_a_split_with_one_failing_variant_keeps_the_whole_old_revision() -> None:
    async def scenario() -> None:
        world = World()
        world.registry.set_alias("churn", "production", 1)
        await world.follower.sync_snapshot()
        world.loads.failing[("churn", 3)] = LoadFailed("churn", 3, stage="example", reason="x")
        world.registry.set_alias("churn", "production", variants=[(2, 90), (3, 10)])
        await world.follower.poll()
        assert world.serving() == (1, [1])

    run(scenario)


def test_an_outage_during_load_is_retried_until_it_swaps_in() -> None:
    async def scenario() -> None:
        world = World()
        world.registry.set_alias("churn", "production", 1)
        await world.follower.sync_snapshot()
        world.loads.failing[("churn", 2)] = LoadFailed(
            "churn", 2, stage="download", reason="storage down", transient=True
        )
        task = asyncio.create_task(world.follower.run())
        world.registry.set_alias("churn", "production", 2)
        await until(lambda: world.loads.calls[("churn", 2)] >= 2)
        assert world.serving() == (1, [1])
        del world.loads.failing[("churn", 2)]
        await until(lambda: world.serving() == (2, [2]))
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    run(scenario)


def test_after_an_outage_the_follower_catches_up_on_every_change() -> None:
    async def scenario() -> None:
        world = World()
        world.registry.set_alias("churn", "production", 1)
        world.registry.set_alias("fraud", "production", 1)
        world.registry.set_alias("fraud", "staging", 1)
        task = asyncio.create_task(world.follower.run())
        async with asyncio.timeout(5):
            await world.follower.settled.wait()
        world.feed.down = True
        await until(lambda: not world.follower.connected)
        assert world.follower.lag_seconds() > 0
        # While the registry is away: a promotion, a split, a new alias and a deletion.
        world.registry.set_alias("churn", "production", 2)
        world.registry.set_alias("fraud", "production", variants=[(1, 50), (2, 50)])
        world.registry.set_alias("churn", "canary", 3)
        world.registry.delete_alias("fraud", "staging")
        assert world.serving() == (1, [1])  # still answering from what it has
        world.feed.down = False
        await until(lambda: world.follower.position == len(world.registry.changes))
        assert world.serving() == (2, [2])
        assert world.serving("fraud") == (2, [1, 2])
        assert world.serving("churn", "canary") == (1, [3])
        assert world.serving("fraud", "staging") is None
        assert world.follower.connected
        assert world.follower.lag_seconds() == 0
        assert world.feed.calls["routing"] == 1  # caught up from the feed, no new snapshot
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    run(scenario)


def test_the_first_snapshot_is_retried_while_the_registry_is_down() -> None:
    async def scenario() -> None:
        world = World()
        world.registry.set_alias("churn", "production", 1)
        world.feed.down = True
        task = asyncio.create_task(world.follower.run())
        await asyncio.sleep(0.1)
        assert not world.follower.settled.is_set()
        world.feed.down = False
        async with asyncio.timeout(5):
            await world.follower.settled.wait()
        assert world.serving() == (1, [1])
        assert world.feed.calls["routing"] >= 2
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    run(scenario)


def test_several_changes_in_one_batch_load_only_the_latest() -> None:
    async def scenario() -> None:
        world = World()
        world.registry.set_alias("churn", "production", 1)
        await world.follower.sync_snapshot()
        for version in (2, 3, 4):
            world.registry.set_alias("churn", "production", version)
        await world.follower.poll()
        assert world.serving() == (4, [4])
        assert ("churn", 2) not in world.loads.calls
        assert ("churn", 3) not in world.loads.calls

    run(scenario)


def test_a_request_in_flight_keeps_the_table_it_started_with() -> None:
    async def scenario() -> None:
        world = World()
        world.registry.set_alias("churn", "production", 1)
        await world.follower.sync_snapshot()
        table = world.router.table  # what a request took when it arrived
        world.registry.set_alias("churn", "production", 2)
        await world.follower.poll()
        assert table[("churn", "production")].pick(None).version == 1
        assert world.router.table[("churn", "production")].pick(None).version == 2
        assert world.router.table is not table

    run(scenario)


def test_a_deleted_alias_can_be_created_again() -> None:
    async def scenario() -> None:
        world = World()
        world.registry.set_alias("churn", "staging", 1)
        await world.follower.sync_snapshot()
        world.registry.delete_alias("churn", "staging")
        await world.follower.poll()
        assert world.serving("churn", "staging") is None
        world.registry.set_alias("churn", "staging", 2)
        await world.follower.poll()
        assert world.serving("churn", "staging") == (3, [2])

    run(scenario)


def test_shadows_load_with_the_revision_and_take_no_traffic() -> None:
    async def scenario() -> None:
        world = World()
        world.registry.set_alias("churn", "production", 1, shadow=(2,))
        await world.follower.sync_snapshot()
        route = world.router.table[("churn", "production")]
        assert [m.version for m in route.targets] == [1]
        assert [m.version for m in route.shadows] == [2]
        assert world.cache.is_held(("churn", 2))

    run(scenario)


@pytest.mark.parametrize("transient", [True, False])
def test_retry_timing_depends_on_whether_the_failure_was_an_outage(transient: bool) -> None:
    async def scenario() -> None:
        world = World()
        world.registry.set_alias("churn", "production", 1)
        await world.follower.sync_snapshot()
        world.loads.failing[("churn", 2)] = LoadFailed(
            "churn", 2, stage="download", reason="x", transient=transient
        )
        world.registry.set_alias("churn", "production", 2)
        await world.follower.poll()
        assert world.follower.waiting_on_outage(("churn", "production")) is transient
        await asyncio.sleep(0.1)  # past the fast backoff, far before failed_retry_seconds
        await world.follower.reconcile()
        assert world.loads.calls[("churn", 2)] == (2 if transient else 1)

    run(scenario)
