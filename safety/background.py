"""Inspect bytes while they stream somewhere else: the upload path's tee.

The writer hands each block to `feed` right after writing it to the store; a thread of our own
parses the same blocks as they come, so the verdict is ready when the upload ends, the bytes are
never read back from the store, and at most `max_queued` blocks wait in between (a slow scan
slows the writer down rather than buffering the artifact).
"""

from __future__ import annotations

import logging
import queue
import threading
from pathlib import Path

from safety.artifacts import Inspection, Kind, inspect_stream
from safety.errors import Reason, UnsafeArtifact
from safety.pickles import DEFAULT_LIMITS, Limits
from safety.streams import QueueChunks

log = logging.getLogger(__name__)


class BackgroundInspection:
    """One artifact's inspection on its own thread. `feed` blocks, then `close`, then `result`."""

    def __init__(
        self,
        *,
        limits: Limits = DEFAULT_LIMITS,
        spool_dir: Path | None = None,
        max_queued: int = 4,
    ) -> None:
        self._blocks: queue.Queue[bytes | None] = queue.Queue(maxsize=max_queued)
        self._chunks = QueueChunks(self._blocks)
        self._limits = limits
        self._spool_dir = spool_dir
        self._closed = False
        self._result: Inspection | None = None
        self._thread = threading.Thread(target=self._run, name="berth-inspect", daemon=True)
        self._thread.start()

    def feed(self, block: bytes) -> None:
        """Queue the next block (blocking while the scanner is `max_queued` blocks behind)."""
        if self._closed:
            raise RuntimeError("feed after close")
        if block:
            self._blocks.put(bytes(block))

    def close(self) -> None:
        """The stream has ended. Safe to call more than once."""
        if not self._closed:
            self._closed = True
            self._blocks.put(None)

    def result(self, timeout: float | None = None) -> Inspection:
        """The verdict, once the scanner has seen the end of the stream."""
        self.close()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError("the artifact inspection did not finish in time")
        assert self._result is not None
        return self._result

    def _run(self) -> None:
        try:
            self._result = inspect_stream(
                self._chunks, limits=self._limits, spool_dir=self._spool_dir
            )
        except Exception as exc:  # a bug in the scanner must reject, never pass
            log.exception("artifact inspection failed")
            self._result = Inspection(
                Kind.pickle,
                0,
                problem=UnsafeArtifact(
                    f"the inspection failed: {type(exc).__name__}: {exc}",
                    reason=Reason.uninspectable,
                ),
            )
        finally:
            # Keep taking blocks until the writer says the stream ended, so it never blocks on
            # a scanner that has already decided.
            while self._chunks.next_chunk():
                pass
