"""The upload body: a multipart stream read from disk, metadata first, with progress.

Why not httpx's own `files=`: the registry streams the artifact straight to its final key only
when the `metadata` part (with the artifact's sha256) arrives *before* the file parts, and the
progress bar needs to see bytes as they leave. Building the body here pins the order, sends a
Content-Length (no chunked encoding), and never holds more than one chunk of a file in memory.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from berth.packaging import FilePart

CHUNK = 1024 * 1024

Progress = Callable[[int, int], None]
"""Called with (bytes done, bytes in total) as a file is hashed or sent."""


def sha256_of(path: Path, progress: Progress | None = None) -> str:
    """The file's sha256, read in chunks."""
    digest = hashlib.sha256()
    total = path.stat().st_size
    done = 0
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    return digest.hexdigest()


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "").replace("\n", "")


class MultipartBody:
    """An iterable multipart/form-data body whose length is known before it is sent."""

    def __init__(
        self, metadata: bytes, files: Sequence[FilePart], *, progress: Progress | None = None
    ) -> None:
        self.boundary = secrets.token_hex(16)
        self._metadata = metadata
        self._files = list(files)
        self._progress = progress
        self._file_bytes = sum(f.size for f in self._files)

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def _head(self, name: str, media_type: str, filename: str | None = None) -> bytes:
        disposition = f'form-data; name="{_quote(name)}"'
        if filename is not None:
            disposition += f'; filename="{_quote(filename)}"'
        return (
            f"--{self.boundary}\r\nContent-Disposition: {disposition}\r\n"
            f"Content-Type: {media_type}\r\n\r\n"
        ).encode()

    def _tail(self) -> bytes:
        return f"--{self.boundary}--\r\n".encode()

    def __len__(self) -> int:
        size = len(self._head("metadata", "application/json")) + len(self._metadata) + 2
        for part in self._files:
            size += len(self._head(part.name, part.media_type, part.path.name)) + 2
        return size + self._file_bytes + len(self._tail())

    def __iter__(self) -> Iterator[bytes]:
        yield self._head("metadata", "application/json") + self._metadata + b"\r\n"
        sent = 0
        for part in self._files:
            yield self._head(part.name, part.media_type, part.path.name)
            with part.path.open("rb") as handle:
                while chunk := handle.read(CHUNK):
                    sent += len(chunk)
                    yield chunk
                    # After the yield: the chunk has been handed to the socket.
                    if self._progress is not None:
                        self._progress(sent, self._file_bytes)
            yield b"\r\n"
        yield self._tail()
