from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from serving.cache import ModelCache, Refusals
from serving.errors import LoadFailed, ServingError, VersionNotFound, error_body, status_of
from serving.loader import FailureLog, Loader, LoaderOptions
from serving.metrics import ServingMetrics
from serving.routing import Router
from serving.service import NOT_FOUND_SECONDS, PredictService, encode
from serving.shadow import Shadower
from tests.serving.factories import artifact, metadata, regressor, row
from tests.serving.fakes import FakeRegistry, FakeSource


def test_numbers_encode_as_json_and_non_finite_values_as_null() -> None:
    assert json.loads(encode(np.array([1.5, 2.0]))) == [1.5, 2.0]
    assert json.loads(encode(np.array([[1.0, np.nan], [-np.inf, np.inf]]))) == [
        [1.0, None],
        [None, None],
    ]
    assert json.loads(encode(np.array([1, 2], dtype=np.int64))) == [1, 2]
    assert json.loads(encode(np.array([True, False]))) == [True, False]


def test_labels_of_any_numpy_type_encode() -> None:
    labels = np.array(["churn", np.int64(3), np.float32(0.5)], dtype=object)
    assert json.loads(encode(labels)) == ["churn", 3, 0.5]
    assert json.loads(encode(np.array(["a", "b"]))) == ["a", "b"]


# --- pinned versions that do not load --------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Pinned:
    service: PredictService
    source: FakeSource
    failures: FailureLog
    clock: Clock

    async def refusal(self, version: int) -> ServingError:
        with pytest.raises(ServingError) as caught:
            await self.service.predict_version("churn", version, BODY)
        return caught.value


BODY = json.dumps({"input": row()}).encode()
RETRY = 60.0


@pytest.fixture
def pinned() -> Pinned:
    """churn v1 uploaded, then its stored bytes changed: it fails at digest, every time."""
    registry = FakeRegistry()
    estimator = regressor()
    registry.add_version("churn", artifact(estimator), metadata(estimator))
    registry.corrupt("churn", 1)
    source = FakeSource(registry)
    failures = FailureLog()
    loader = Loader(source, options=LoaderOptions(), on_failure=failures.record)
    metrics = ServingMetrics()
    clock = Clock()
    service = PredictService(
        Router(),
        ModelCache(loader.load, max_unheld=4),
        Shadower(metrics, max_in_flight=0, rtol=0, atol=0),
        metrics,
        default_alias="production",
        inline_max_rows=64,
        failed_retry_seconds=RETRY,
        refusals=Refusals(clock=clock),
    )
    return Pinned(service, source, failures, clock)


def shape(error: ServingError) -> tuple[type[ServingError], int, dict[str, Any]]:
    return type(error), status_of(error), error_body(error)


def test_a_version_that_failed_for_good_is_refused_from_memory_until_the_retry(
    pinned: Pinned,
) -> None:
    async def scenario() -> None:
        first = await pinned.refusal(1)
        assert isinstance(first, LoadFailed)
        assert first.stage == "digest"
        again = [await pinned.refusal(1) for _ in range(20)]
        assert pinned.source.lookups[("churn", 1)] == 1
        assert pinned.source.downloads[("churn", 1)] == 1
        assert len(pinned.failures.recent()) == 1  # the aliases' own failures stay in view
        assert [shape(e) for e in again] == [shape(first)] * len(again)
        assert all(e.__cause__ is None and e is not again[0] for e in again[1:])

        pinned.clock.now += RETRY - 0.1
        await pinned.refusal(1)
        assert pinned.source.downloads[("churn", 1)] == 1
        pinned.clock.now += 0.2
        await pinned.refusal(1)
        assert pinned.source.downloads[("churn", 1)] == 2
        assert len(pinned.failures.recent()) == 2

    asyncio.run(scenario())


def test_a_version_the_registry_lacks_is_refused_from_memory_for_seconds_only(
    pinned: Pinned,
) -> None:
    async def scenario() -> None:
        first = await pinned.refusal(2)
        assert isinstance(first, VersionNotFound)
        for _ in range(20):
            assert shape(await pinned.refusal(2)) == shape(first)
        assert pinned.source.lookups[("churn", 2)] == 1

        estimator = regressor(offset=2)
        pinned.source.registry.add_version("churn", artifact(estimator), metadata(estimator))
        pinned.clock.now += NOT_FOUND_SECONDS
        answer = await pinned.service.predict_version("churn", 2, BODY)
        assert json.loads(answer.content)["predictions"] == pytest.approx([5.0])
        assert pinned.source.lookups[("churn", 2)] == 2

    asyncio.run(scenario())


def test_a_transient_failure_is_tried_again_on_the_next_request(pinned: Pinned) -> None:
    async def scenario() -> None:
        pinned.source.outage = True
        for _ in range(3):
            error = await pinned.refusal(1)
            assert isinstance(error, LoadFailed)
            assert error.transient
        assert pinned.source.downloads[("churn", 1)] == 3

    asyncio.run(scenario())


def test_refusals_are_bounded_dropping_the_least_recently_used() -> None:
    clock = Clock()
    refusals = Refusals(size=2, clock=clock)
    for version in (1, 2):
        refusals.remember(("churn", version), VersionNotFound("churn", version), seconds=5)
    assert refusals.get(("churn", 1)) is not None  # used: now the most recent
    refusals.remember(("churn", 3), VersionNotFound("churn", 3), seconds=5)
    assert len(refusals) == 2
    assert refusals.get(("churn", 2)) is None
    assert refusals.get(("churn", 1)) is not None
    clock.now += 5
    assert refusals.get(("churn", 1)) is None
    assert len(refusals) == 1
