"""Byte sources for the scanner: a file, blocks pushed from another thread, a decompressor.

Every source hands out chunks; `Reader` turns chunks into the `read`/`readline`/`skip` a pull
parser wants while holding at most one chunk plus a partial line, so a multi-gigabyte artifact is
inspected in bounded memory.
"""

from __future__ import annotations

import bz2
import lzma
import queue
import zlib
from collections.abc import Iterator
from typing import IO, Protocol

from safety.errors import Reason, UnsafeArtifact

CHUNK = 1024 * 1024


class Chunks(Protocol):
    def next_chunk(self) -> bytes:
        """The next non-empty chunk, or b"" at the end of the stream."""
        ...


class FileChunks:
    def __init__(self, handle: IO[bytes], *, chunk: int = CHUNK) -> None:
        self._handle = handle
        self._chunk = chunk

    def next_chunk(self) -> bytes:
        return self._handle.read(self._chunk)


class IterChunks:
    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks

    def next_chunk(self) -> bytes:
        for chunk in self._chunks:
            if chunk:
                return chunk
        return b""


class QueueChunks:
    """Blocks another thread `put`s; `None` ends the stream."""

    def __init__(self, blocks: queue.Queue[bytes | None]) -> None:
        self._blocks = blocks
        self._ended = False

    def next_chunk(self) -> bytes:
        while not self._ended:
            block = self._blocks.get()
            if block is None:
                self._ended = True
            elif block:
                return block
        return b""


class Reader:
    """Buffered reads over chunks, with the short-read-at-end semantics of a file."""

    def __init__(self, chunks: Chunks, *, max_line: int) -> None:
        self._chunks = chunks
        self._buffer = b""
        self._pos = 0
        self._consumed = 0  # bytes of earlier, dropped buffers
        self._eof = False
        self._max_line = max_line

    @property
    def offset(self) -> int:
        """How many bytes have been consumed from the start of the stream."""
        return self._consumed + self._pos

    def _fill(self) -> bool:
        """Replace the (fully consumed) buffer with the next chunk; False at the end."""
        if self._eof:
            return False
        chunk = self._chunks.next_chunk()
        if not chunk:
            self._eof = True
            return False
        self._consumed += len(self._buffer)
        self._buffer, self._pos = chunk, 0
        return True

    def read(self, n: int) -> bytes:
        """Up to `n` bytes; fewer only at the end of the stream."""
        end = self._pos + n
        if end <= len(self._buffer):
            data = self._buffer[self._pos : end]
            self._pos = end
            return data
        parts = [self._buffer[self._pos :]]
        need = n - len(parts[0])
        self._pos = len(self._buffer)
        while need > 0 and self._fill():
            take = self._buffer[:need]
            self._pos = len(take)
            parts.append(take)
            need -= len(take)
        return b"".join(parts)

    def skip(self, n: int) -> int:
        """Discard up to `n` bytes without keeping them; returns how many were discarded."""
        skipped = 0
        while True:
            available = len(self._buffer) - self._pos
            if n - skipped <= available:
                self._pos += n - skipped
                return n
            skipped += available
            self._pos = len(self._buffer)
            if not self._fill():
                return skipped

    def readline(self) -> bytes:
        """Bytes up to and including the next newline, or to the end of the stream."""
        newline = self._buffer.find(b"\n", self._pos)
        if newline >= 0:
            line = self._buffer[self._pos : newline + 1]
            self._pos = newline + 1
            return line
        parts = [self._buffer[self._pos :]]
        size = len(parts[0])
        self._pos = len(self._buffer)
        while self._fill():
            newline = self._buffer.find(b"\n")
            end = newline + 1 if newline >= 0 else len(self._buffer)
            parts.append(self._buffer[:end])
            self._pos = end
            size += end
            if size > self._max_line:
                raise UnsafeArtifact(
                    f"a text line longer than {self._max_line} bytes",
                    reason=Reason.limit,
                    offset=self.offset,
                )
            if newline >= 0:
                break
        return b"".join(parts)

    def peek(self, n: int) -> bytes:
        """The next `n` bytes (fewer at the end) without consuming them; `n` <= one chunk."""
        if len(self._buffer) - self._pos < n and not self._eof:
            rest = self._buffer[self._pos :]
            self._consumed += self._pos
            self._buffer, self._pos = rest, 0
            while len(self._buffer) < n:
                chunk = self._chunks.next_chunk()
                if not chunk:
                    self._eof = True
                    break
                self._buffer += chunk
        return self._buffer[self._pos : self._pos + n]

    def at_end(self) -> bool:
        return not self.peek(1)

    def drain(self) -> int:
        """Consume the rest of the stream; returns how many bytes that was."""
        total = 0
        while chunk := self.read(CHUNK):
            total += len(chunk)
        return total


class DecompressedChunks:
    """Decompresses one stream of `kind` from `source`, refusing to expand past `limit` bytes.

    Exactly one compressed stream is accepted: bytes after its end (a second member, trailing
    garbage) make the artifact uninspectable rather than silently ignored, because loaders differ
    in what they do with them.
    """

    def __init__(self, source: Reader, kind: str, *, limit: int) -> None:
        self._source = source
        self._kind = kind
        self._limit = limit
        self._produced = 0
        self._done = False
        self._zlib: zlib._Decompress | None = None
        self._other: bz2.BZ2Decompressor | lzma.LZMADecompressor | None = None
        if kind in ("zlib", "gzip"):
            wbits = 16 + zlib.MAX_WBITS if kind == "gzip" else zlib.MAX_WBITS
            self._zlib = zlib.decompressobj(wbits)
        elif kind == "bz2":
            self._other = bz2.BZ2Decompressor()
        elif kind == "xz":
            self._other = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
        elif kind == "lzma":
            self._other = lzma.LZMADecompressor(format=lzma.FORMAT_ALONE)
        else:
            raise self._fail("no decompressor for it")

    def _fail(self, why: str) -> UnsafeArtifact:
        return UnsafeArtifact(
            f"the {self._kind}-compressed stream cannot be inspected: {why}",
            reason=Reason.uninspectable,
            offset=self._source.offset,
        )

    def next_chunk(self) -> bytes:
        while not self._done:
            try:
                out = self._step()
            except (zlib.error, OSError, lzma.LZMAError, EOFError, ValueError) as exc:
                raise self._fail(str(exc)) from exc
            if out:
                self._produced += len(out)
                if self._produced > self._limit:
                    raise UnsafeArtifact(
                        f"the compressed stream expands to more than {self._limit} bytes",
                        reason=Reason.limit,
                        offset=self._source.offset,
                    )
                return out
        return b""

    def _step(self) -> bytes:
        """Some output, or b"" after noting the end of the stream; raises when truncated."""
        if self._zlib is not None:
            z = self._zlib
            if z.eof:
                return self._end(z.unused_data + z.unconsumed_tail)
            data = z.unconsumed_tail or self._source.read(CHUNK)
            out = z.decompress(data, CHUNK)
            if not out and not data and not z.eof:
                raise self._fail("it ends before the end of the compressed stream")
            return out
        d = self._other
        assert d is not None
        if d.eof:
            return self._end(d.unused_data)
        data = self._source.read(CHUNK) if d.needs_input else b""
        if d.needs_input and not data:
            raise self._fail("it ends before the end of the compressed stream")
        return d.decompress(data, CHUNK)

    def _end(self, unused: bytes) -> bytes:
        self._done = True
        if unused or not self._source.at_end():
            raise self._fail("there are bytes after the end of the compressed stream")
        return b""
