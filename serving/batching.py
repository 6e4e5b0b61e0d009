"""Adaptive micro-batching: concurrent requests for one version answered by one model call.

A request that finds its version idle is predicted at once, exactly as without batching: a lone
request never waits. Requests that arrive while a call for the same version (and the same
output methods) is running queue up; when that call returns, everything queued, up to
`max_rows` rows, goes into the next call — stacked with `np.vstack` and split back by row counts.
So batches grow with the load by themselves ("collect while busy"): at one connection every
call holds one request, at 64 connections a call holds what arrived during the previous one.

`max_wait` is only an upper bound: a queued request that has waited that long while the running
call still runs (or a queue that already holds `max_rows` rows) is dispatched in a second call
alongside the first. Two calls per lane at most: more would only split the same CPU.

Fast models predicted on the event loop (`LoadedModel.inline`) are never batched: nothing else
can run while they predict, so there is never a batch to collect.

A batched call that raises is retried request by request, so one bad request fails alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

Inputs = np.ndarray[Any, Any]
Method = Callable[[Inputs], Any]

MAX_CALLS_PER_LANE = 2
"""Model calls in flight per lane: the running one, plus one the wait bound may start."""


def call_all(methods: Sequence[Method], inputs: Inputs) -> list[Any]:
    return [method(inputs) for method in methods]


def _one_by_one(methods: Sequence[Method], batch: list[Inputs]) -> list[list[Any] | Exception]:
    """Each request alone: its results, or the exception its own call raised."""
    answers: list[list[Any] | Exception] = []
    for inputs in batch:
        try:
            answers.append(call_all(methods, inputs))
        except Exception as exc:
            answers.append(exc)
    return answers


def split(results: list[Any], counts: Sequence[int]) -> list[list[Any]]:
    """Per-request results from one call's results, by the row count of each request."""
    total = sum(counts)
    arrays = []
    for result in results:
        array = result if isinstance(result, np.ndarray) else np.asarray(result)
        if array.ndim == 0 or len(array) != total:
            raise ValueError(f"a batched call answered {array.shape} for {total} rows")
        arrays.append(array)
    answers = []
    start = 0
    for count in counts:
        answers.append([array[start : start + count] for array in arrays])
        start += count
    return answers


class _Lane:
    """One (version, outputs, input layout): its queue and the calls it has running."""

    __slots__ = ("methods", "queue", "rows", "running", "timer")

    def __init__(self, methods: Sequence[Method]) -> None:
        self.methods = methods
        self.queue: list[tuple[Inputs, asyncio.Future[list[Any]]]] = []
        self.rows = 0
        self.running = 0
        self.timer: asyncio.TimerHandle | None = None


LaneKey = tuple[object, tuple[str, ...], str, int]


class Batcher:
    def __init__(
        self,
        *,
        max_rows: int,
        max_wait_seconds: float,
        observe: Callable[[int, int], None] | None = None,
    ) -> None:
        """`observe(requests, rows)` is told the size of every model call it makes."""
        self._max_rows = max_rows
        self._max_wait = max_wait_seconds
        self._observe = observe
        self._lanes: dict[LaneKey, _Lane] = {}
        self._tasks: set[asyncio.Future[None]] = set()

    async def predict(
        self, model: object, outputs: tuple[str, ...], methods: Sequence[Method], inputs: Inputs
    ) -> list[Any]:
        """`methods` called on `inputs`, in a worker thread, alone or batched with others."""
        key: LaneKey = (model, outputs, inputs.dtype.str, inputs.shape[1])
        lane = self._lanes.get(key)
        if lane is None:
            # Idle: call at once. The lane exists only while calls run, so others can join it.
            lane = self._lanes[key] = _Lane(methods)
            lane.running = 1
            try:
                return await self._call(methods, inputs, requests=1)
            finally:
                self._finished(key, lane)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        lane.queue.append((inputs, future))
        lane.rows += len(inputs)
        if lane.rows >= self._max_rows:
            self._dispatch(key, lane, bounded=True)
        elif lane.timer is None:
            lane.timer = loop.call_later(self._max_wait, self._expired, key, lane)
        return await future

    async def _call(self, methods: Sequence[Method], inputs: Inputs, *, requests: int) -> list[Any]:
        if self._observe is not None:
            self._observe(requests, len(inputs))
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, call_all, methods, inputs)

    def _expired(self, key: LaneKey, lane: _Lane) -> None:
        lane.timer = None
        self._dispatch(key, lane, bounded=True)

    def _finished(self, key: LaneKey, lane: _Lane) -> None:
        lane.running -= 1
        if lane.queue:
            self._dispatch(key, lane, bounded=False)
        elif lane.running == 0:
            del self._lanes[key]

    def _dispatch(self, key: LaneKey, lane: _Lane, *, bounded: bool) -> None:
        """Start a call with the head of the queue; `bounded`: only if a call slot is free."""
        if not lane.queue or (bounded and lane.running >= MAX_CALLS_PER_LANE):
            return
        taken, rows = 0, 0
        for inputs, _ in lane.queue:
            if taken and rows + len(inputs) > self._max_rows:
                break
            taken += 1
            rows += len(inputs)
        batch, lane.queue = lane.queue[:taken], lane.queue[taken:]
        lane.rows -= rows
        if lane.timer is not None:
            lane.timer.cancel()
            lane.timer = None
        if lane.queue:
            loop = asyncio.get_running_loop()
            lane.timer = loop.call_later(self._max_wait, self._expired, key, lane)
        lane.running += 1
        task = asyncio.ensure_future(self._run_batch(key, lane, batch))
        # The task reports through the requests' futures; keep it referenced while it runs.
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_batch(
        self, key: LaneKey, lane: _Lane, batch: list[tuple[Inputs, asyncio.Future[list[Any]]]]
    ) -> None:
        try:
            inputs = [item[0] for item in batch]
            futures = [item[1] for item in batch]
            answers: list[list[Any] | Exception]
            try:
                stacked = inputs[0] if len(inputs) == 1 else np.vstack(inputs)
                results = await self._call(lane.methods, stacked, requests=len(batch))
                answers = list(split(results, [len(part) for part in inputs]))
            except Exception:
                if len(batch) == 1:
                    raise
                # One bad request must not fail the others: each alone, each its own answer.
                loop = asyncio.get_running_loop()
                answers = await loop.run_in_executor(None, _one_by_one, lane.methods, inputs)
            for future, answer in zip(futures, answers, strict=True):
                if future.done():  # its request went away (client disconnected)
                    continue
                if isinstance(answer, Exception):
                    future.set_exception(answer)
                else:
                    future.set_result(answer)
        except BaseException as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            self._finished(key, lane)
