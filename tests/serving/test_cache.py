from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from serving.cache import ModelCache
from serving.errors import LoadFailed
from serving.loader import LoadedModel, SklearnPredictor


def model(name: str, version: int) -> LoadedModel:
    return LoadedModel(
        name=name,
        version=version,
        sha256="0" * 64,
        flavor="sklearn",
        predictor=SklearnPredictor(estimator=None, methods={"predict": lambda x: x}),
        schema=None,
        inline=True,
        load_seconds=0.0,
        predict_seconds=0.0,
    )


class FakeLoads:
    """Counts loads; a gate holds them until the test opens it; `failing` versions raise."""

    def __init__(self) -> None:
        self.calls: Counter[tuple[str, int]] = Counter()
        self.gate = asyncio.Event()
        self.gate.set()
        self.failing: set[tuple[str, int]] = set()

    async def __call__(self, name: str, version: int) -> LoadedModel:
        self.calls[(name, version)] += 1
        await self.gate.wait()
        if (name, version) in self.failing:
            raise LoadFailed(name, version, stage="digest", reason="bytes changed")
        return model(name, version)


def test_concurrent_first_requests_cause_one_load() -> None:
    async def scenario() -> None:
        loads = FakeLoads()
        loads.gate.clear()
        cache = ModelCache(loads, max_unheld=4)
        waiters = [asyncio.create_task(cache.get_or_load("churn", 3)) for _ in range(50)]
        await asyncio.sleep(0.01)
        assert cache.loading() == [("churn", 3)]
        loads.gate.set()
        results = await asyncio.gather(*waiters)
        assert loads.calls == {("churn", 3): 1}
        assert all(r is results[0] for r in results)
        assert cache.get("churn", 3) is results[0]

    asyncio.run(scenario())


def test_a_failed_load_leaves_no_entry_and_the_next_request_tries_again() -> None:
    async def scenario() -> None:
        loads = FakeLoads()
        loads.failing.add(("churn", 2))
        cache = ModelCache(loads, max_unheld=4)
        results = await asyncio.gather(
            *(cache.get_or_load("churn", 2) for _ in range(5)), return_exceptions=True
        )
        assert all(isinstance(r, LoadFailed) and r.stage == "digest" for r in results)
        assert loads.calls[("churn", 2)] == 1
        assert ("churn", 2) not in cache
        assert cache.loading() == []
        loads.failing.clear()
        assert (await cache.get_or_load("churn", 2)).version == 2
        assert loads.calls[("churn", 2)] == 2

    asyncio.run(scenario())


def test_a_caller_giving_up_does_not_cancel_the_load_for_the_others() -> None:
    async def scenario() -> None:
        loads = FakeLoads()
        loads.gate.clear()
        cache = ModelCache(loads, max_unheld=4)
        impatient = asyncio.create_task(cache.get_or_load("churn", 1))
        patient = asyncio.create_task(cache.get_or_load("churn", 1))
        await asyncio.sleep(0.01)
        impatient.cancel()
        loads.gate.set()
        assert (await patient).version == 1
        assert loads.calls[("churn", 1)] == 1

    asyncio.run(scenario())


def test_pinned_versions_live_in_an_lru_bounded_by_max_models() -> None:
    async def scenario() -> None:
        cache = ModelCache(FakeLoads(), max_unheld=2)
        for version in (1, 2):
            await cache.get_or_load("churn", version)
        cache.get("churn", 1)  # 1 is now more recently used than 2
        await cache.get_or_load("churn", 3)
        assert ("churn", 1) in cache
        assert ("churn", 3) in cache
        assert ("churn", 2) not in cache
        assert len(cache) == 2

    asyncio.run(scenario())


def test_versions_behind_an_alias_are_never_evicted() -> None:
    async def scenario() -> None:
        evicted: list[int] = []
        cache = ModelCache(FakeLoads(), max_unheld=1, on_evict=lambda m: evicted.append(m.version))
        production = await cache.get_or_load("churn", 1)
        cache.hold([production])
        staging = await cache.get_or_load("churn", 2)
        cache.hold([production, staging])
        for version in range(3, 8):
            await cache.get_or_load("churn", version)
        assert ("churn", 1) in cache
        assert ("churn", 2) in cache
        assert ("churn", 7) in cache
        assert len(cache) == 3
        assert evicted == [3, 4, 5, 6]
        # Once the alias moves away the old version joins the LRU as its newest entry.
        cache.hold([staging])
        assert ("churn", 1) in cache
        assert ("churn", 7) not in cache

    asyncio.run(scenario())


def test_holding_reinserts_a_version_the_lru_dropped_while_a_batch_loaded() -> None:
    async def scenario() -> None:
        cache = ModelCache(FakeLoads(), max_unheld=1)
        first = await cache.get_or_load("a", 1)
        second = await cache.get_or_load("b", 1)
        assert ("a", 1) not in cache
        cache.hold([first, second])
        assert ("a", 1) in cache
        assert cache.get("a", 1) is first

    asyncio.run(scenario())


@pytest.mark.parametrize("max_unheld", [1, 3])
def test_get_never_loads(max_unheld: int) -> None:
    loads = FakeLoads()
    cache = ModelCache(loads, max_unheld=max_unheld)
    assert cache.get("churn", 1) is None
    assert not loads.calls
