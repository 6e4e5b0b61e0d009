"""The replica report: every few seconds, and at once after each swap.

Reporting right after a swap is what lets `berth promote --wait` return within a second of the
last replica switching, instead of a heartbeat interval later.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

from registry.schemas import LoadFailure, ReplicaOut, ReplicaReport, ServedAlias
from serving.errors import ServingError
from serving.follower import Follower
from serving.loader import FailureLog

logger = logging.getLogger(__name__)


class ReportSink(Protocol):
    async def report(self, replica_id: str, report: ReplicaReport) -> ReplicaOut: ...


def build_report(
    follower: Follower, failures: FailureLog, *, started_at: datetime
) -> ReplicaReport:
    return ReplicaReport(
        position=follower.position or 0,
        serving=[
            ServedAlias(model=spec.model, alias=spec.alias, revision=spec.revision)
            for spec in follower.live.values()
        ],
        failures=[
            LoadFailure(model=f.model, version=f.version, stage=f.stage, message=f.message, at=f.at)
            for f in failures.recent()[-100:]
        ],
        started_at=started_at,
    )


class Heartbeat:
    def __init__(
        self,
        sink: ReportSink,
        replica_id: str,
        build: Callable[[], ReplicaReport],
        *,
        interval_seconds: float,
    ) -> None:
        self._sink = sink
        self._replica_id = replica_id
        self._build = build
        self._interval = interval_seconds
        self._wake = asyncio.Event()
        self.last_ok: datetime | None = None
        self.last_error: str | None = None

    def poke(self) -> None:
        """Send a report now (after a swap) rather than at the next tick."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self._sink.report(self._replica_id, self._build())
                self.last_error = None
                self.last_ok = datetime.now(UTC)
            except ServingError as exc:
                if self.last_error != exc.message:
                    logger.warning("replica report failed: %s", exc.message)
                self.last_error = exc.message
            except Exception as exc:
                logger.exception("replica report failed unexpectedly")
                self.last_error = repr(exc)
            try:
                async with asyncio.timeout(self._interval):
                    await self._wake.wait()
            except TimeoutError:
                pass
