"""Shadow traffic: shadow versions get a copy of a request after the live answer is ready.

The copy runs in a detached task on a worker thread, so the caller's response and latency are
untouched (a Starlette background task would hold the keep-alive connection until it ended).
Per (model, alias, shadow version) it records latency, errors and how many rows agree with the
live answer. Past `max_in_flight` copies are dropped and counted, never queued: shadow load
must not build up behind a slow shadow version.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from serving.loader import LoadedModel
from serving.metrics import ServingMetrics

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class ShadowStats:
    requests: int = 0
    errors: int = 0
    dropped: int = 0
    rows: int = 0
    agreed_rows: int = 0
    seconds: float = 0.0
    last_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        answered = self.requests - self.errors
        return {
            "requests": self.requests,
            "errors": self.errors,
            "dropped": self.dropped,
            "rows": self.rows,
            "agreed_rows": self.agreed_rows,
            "agreement": self.agreed_rows / self.rows if self.rows else None,
            "mean_seconds": self.seconds / answered if answered else None,
            "last_error": self.last_error,
        }


def agreeing_rows(live: Any, shadow: Any, *, rtol: float, atol: float) -> int:
    """How many rows of two answers agree: within tolerance for numbers, equal for labels."""
    a = np.asarray(live)
    b = np.asarray(shadow)
    if a.shape != b.shape or a.ndim == 0:
        return 0
    if a.dtype.kind in "biuf" and b.dtype.kind in "biuf":
        same = np.isclose(a.astype(np.float64), b.astype(np.float64), rtol=rtol, atol=atol)
    else:
        same = a == b
    if same.ndim > 1:
        return int(np.count_nonzero(same.reshape(same.shape[0], -1).all(axis=1)))
    return int(np.count_nonzero(same))


class Shadower:
    def __init__(
        self, metrics: ServingMetrics, *, max_in_flight: int, rtol: float, atol: float
    ) -> None:
        self._metrics = metrics
        self._max_in_flight = max_in_flight
        self._rtol = rtol
        self._atol = atol
        self._tasks: set[asyncio.Task[None]] = set()
        self.stats: dict[tuple[str, str, int], ShadowStats] = {}

    def _stats(self, model: LoadedModel, alias: str) -> ShadowStats:
        key = (model.name, alias, model.version)
        found = self.stats.get(key)
        if found is None:
            found = self.stats[key] = ShadowStats()
        return found

    def submit(
        self,
        alias: str,
        inputs: np.ndarray[Any, Any],
        live: Any | None,
        shadows: tuple[LoadedModel, ...],
    ) -> None:
        """Send a copy to each shadow version; returns at once."""
        for shadow in shadows:
            if len(self._tasks) >= self._max_in_flight:
                self._stats(shadow, alias).dropped += 1
                self._metrics.shadow_requests.labels(
                    shadow.name, str(shadow.version), alias, "dropped"
                ).inc()
                continue
            task = asyncio.create_task(self._run(alias, inputs, live, shadow))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(
        self, alias: str, inputs: np.ndarray[Any, Any], live: Any | None, shadow: LoadedModel
    ) -> None:
        stats = self._stats(shadow, alias)
        labels = (shadow.name, str(shadow.version), alias)
        stats.requests += 1
        predict = shadow.methods["predict"]
        started = time.perf_counter()
        try:
            answer = await asyncio.to_thread(predict, inputs)
        except Exception as exc:
            stats.errors += 1
            stats.last_error = f"{type(exc).__name__}: {exc}"[:500]
            self._metrics.shadow_requests.labels(*labels, "error").inc()
            return
        elapsed = time.perf_counter() - started
        stats.seconds += elapsed
        self._metrics.shadow_requests.labels(*labels, "ok").inc()
        self._metrics.shadow_latency.labels(*labels).observe(elapsed)
        if live is None:
            return
        rows = len(inputs)
        agreed = agreeing_rows(live, answer, rtol=self._rtol, atol=self._atol)
        stats.rows += rows
        stats.agreed_rows += agreed
        if agreed:
            self._metrics.shadow_rows.labels(*labels, "agree").inc(agreed)
        if rows - agreed:
            self._metrics.shadow_rows.labels(*labels, "disagree").inc(rows - agreed)

    async def drain(self) -> None:
        """Wait for the copies in flight (tests, and a graceful shutdown)."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.drain()
