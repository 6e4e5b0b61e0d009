"""Graceful shutdown of a serving replica: leave the load balancer first, then drain, then exit.

On SIGTERM (what Kubernetes sends when it removes a pod) a replica
1. reports not-ready on `/readyz` (and the protocols' readiness routes) at once, while it goes on
   answering every request, for `BERTH_SHUTDOWN_DELAY_SECONDS`: the time the endpoints
   controller and load balancers take to stop sending new requests to it;
2. then closes its listener and lets the requests in flight finish, for at most
   `BERTH_SHUTDOWN_DRAIN_SECONDS` (uvicorn's `timeout_graceful_shutdown`);
3. then runs the app's shutdown (deregisters from the registry) and exits with status 0.

uvicorn alone would close the listener at once, so requests routed in the next moments fail,
and it re-raises the signal after its shutdown, so the process would end by SIGTERM, not 0.
A second SIGTERM or a SIGINT skips the rest of the delay; a second SIGINT exits at once.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from types import FrameType

import uvicorn

logger = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    """A uvicorn server whose first SIGTERM starts a not-ready delay before the usual shutdown."""

    def __init__(
        self, config: uvicorn.Config, *, delay_seconds: float, on_drain: Callable[[], None]
    ) -> None:
        super().__init__(config)
        self.delay_seconds = delay_seconds
        self.on_drain = on_drain
        self.draining_until: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM and self.draining_until is None:
            # Runs in the signal handler, on the event loop's thread: flags only, no awaiting.
            self.on_drain()
            self.draining_until = time.monotonic() + self.delay_seconds
            logger.info(
                "SIGTERM: not ready; serving for %.1f s more, then draining", self.delay_seconds
            )
            return
        if sig == signal.SIGTERM:
            self.should_exit = True  # a second SIGTERM: no more delay, drain now
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self.draining_until is not None and time.monotonic() >= self.draining_until:
            self.should_exit = True
        return await super().on_tick(counter)
