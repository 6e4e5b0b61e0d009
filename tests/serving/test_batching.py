"""Adaptive micro-batching: concurrent requests share one model call; a lone one never waits."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from serving.batching import Batcher
from tests.serving.conftest import ServingClient, eventually
from tests.serving.factories import artifact, metadata, regressor, row
from tests.serving.fakes import FakeRegistry

Start = Callable[..., ServingClient]
Rows = np.ndarray[Any, Any]


class CountingModel:
    """`predict` = the sum of each row, counting calls; the first call can be held open."""

    def __init__(self, *, hold_first: bool = False) -> None:
        self.calls: list[int] = []
        self.gate = threading.Event()
        if not hold_first:
            self.gate.set()
        self.started = threading.Event()
        self._lock = threading.Lock()

    def predict(self, rows: Rows) -> Rows:
        with self._lock:
            first = not self.calls
            self.calls.append(len(rows))
        if first:
            self.started.set()
            assert self.gate.wait(30)
        if (rows < 0).any():
            raise ValueError("negative values are refused")
        total: Rows = rows.sum(axis=1)
        return total


def request(value: float, n: int = 1) -> Rows:
    return np.full((n, 3), value)


async def held_then_queued(
    batcher: Batcher, model: CountingModel, values: list[float], *, rows: int = 1
) -> tuple[Any, list[Any]]:
    """One call held running while `values` queue behind it; then released. All outcomes."""
    first = asyncio.ensure_future(
        batcher.predict(model, ("predict",), [model.predict], request(0.5))
    )
    await asyncio.to_thread(model.started.wait, 30)
    queued = [
        asyncio.ensure_future(
            batcher.predict(model, ("predict",), [model.predict], request(v, rows))
        )
        for v in values
    ]
    await asyncio.sleep(0)  # every queued request reaches the batcher before the release
    model.gate.set()
    outcomes = await asyncio.gather(*queued, return_exceptions=True)
    return await first, outcomes


def test_requests_arriving_during_a_call_share_the_next_one() -> None:
    model = CountingModel(hold_first=True)
    batcher = Batcher(max_rows=64, max_wait_seconds=3600)
    first, outcomes = asyncio.run(held_then_queued(batcher, model, [1.0, 2.0, 3.0, 4.0, 5.0]))

    assert model.calls == [1, 5]
    assert first[0].tolist() == [1.5]
    assert [o[0].tolist() for o in outcomes] == [[3.0], [6.0], [9.0], [12.0], [15.0]]


def test_a_lone_request_is_called_at_once_however_long_the_wait() -> None:
    model = CountingModel()
    seen: list[tuple[int, int]] = []
    batcher = Batcher(max_rows=64, max_wait_seconds=3600, observe=lambda *s: seen.append(s))

    async def alone() -> list[list[float]]:
        answers = []
        for value in (1.0, 2.0):
            result = await batcher.predict(model, ("predict",), [model.predict], request(value))
            answers.append(result[0].tolist())
        return answers

    assert asyncio.run(alone()) == [[3.0], [6.0]]
    assert model.calls == [1, 1]
    assert seen == [(1, 1), (1, 1)]


def test_a_call_takes_at_most_max_rows() -> None:
    model = CountingModel(hold_first=True)
    batcher = Batcher(max_rows=4, max_wait_seconds=3600)
    _, outcomes = asyncio.run(held_then_queued(batcher, model, [float(v) for v in range(7)]))

    assert model.calls[0] == 1
    assert sum(model.calls[1:]) == 7
    assert max(model.calls[1:]) <= 4
    assert [o[0].tolist() for o in outcomes] == [[3.0 * v] for v in range(7)]


def test_requests_of_several_rows_are_split_back_by_their_row_counts() -> None:
    model = CountingModel(hold_first=True)
    batcher = Batcher(max_rows=64, max_wait_seconds=3600)
    _, outcomes = asyncio.run(held_then_queued(batcher, model, [1.0, 2.0], rows=3))

    assert model.calls == [1, 6]
    assert [o[0].tolist() for o in outcomes] == [[3.0] * 3, [6.0] * 3]


def test_a_bad_request_fails_alone() -> None:
    model = CountingModel(hold_first=True)
    batcher = Batcher(max_rows=64, max_wait_seconds=3600)
    _, outcomes = asyncio.run(held_then_queued(batcher, model, [1.0, -1.0, 2.0]))

    assert model.calls[:2] == [1, 3]  # the batch was tried, then each request on its own
    assert outcomes[0][0].tolist() == [3.0]
    assert isinstance(outcomes[1], ValueError)
    assert outcomes[2][0].tolist() == [6.0]


def test_the_wait_bounds_how_long_a_queued_request_waits_for_a_running_call() -> None:
    model = CountingModel(hold_first=True)
    batcher = Batcher(max_rows=64, max_wait_seconds=0.001)

    async def scenario() -> list[float]:
        first = asyncio.ensure_future(
            batcher.predict(model, ("predict",), [model.predict], request(0.5))
        )
        await asyncio.to_thread(model.started.wait, 30)
        # Answered while the first call is still held: a second call started alongside.
        second = await batcher.predict(model, ("predict",), [model.predict], request(1.0))
        model.gate.set()
        await first
        return list(second[0].tolist())

    assert asyncio.run(scenario()) == [3.0]
    assert model.calls == [1, 1]


# --- through the serving app ---------------------------------------------------------------------


def predict_concurrently(client: ServingClient, values: list[float]) -> list[Any]:
    def one(value: float) -> Any:
        response = client.post("/models/churn/predict", json={"inputs": [row(value=value)]})
        assert response.status_code == 200, response.text
        return response.json()["predictions"]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, values))


def batch_count(client: ServingClient) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("berth_serving_batch_requests_count"):
            return float(line.split()[-1])
    raise AssertionError("no berth_serving_batch_requests metric")


@pytest.mark.parametrize("batching", [True, False])
def test_serving_answers_every_request_with_batching_on_or_off(
    fake: FakeRegistry, start_serving: Start, batching: bool
) -> None:
    estimator = regressor(offset=1)
    fake.add_version("churn", artifact(estimator), metadata(estimator))
    fake.set_alias("churn", "production", 1)
    # A zero inline bound sends every predict to a worker thread, where batching applies.
    client = start_serving(inline_predict_max_seconds=0, batching=batching)
    eventually(lambda: client.get("/readyz").status_code == 200)

    values = [float(v) for v in range(40)]
    answers = predict_concurrently(client, values)

    assert answers == [[pytest.approx(3 * v + 1)] for v in values]
    if batching:
        assert 1 <= batch_count(client) <= len(values)
    else:
        assert batch_count(client) == 0
