"""Streaming multipart uploads straight into the artifact store.

Starlette's form parser spools every file to a temporary file before the handler runs; here the
body is parsed as it arrives and each file part is hashed and written to the store part by part,
so memory stays at about two store parts whatever the artifact's size, a too-large upload fails
with 413 the moment it crosses the limit, and nothing touches local disk on the way to S3.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from anyio import CancelScope
from pydantic import ValidationError
from python_multipart.exceptions import FormParserError, MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request

from registry import repository as repo
from registry.db import Database
from registry.errors import (
    BadRequest,
    DigestMismatch,
    InvalidInput,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from registry.schemas import FILE_NAME_PATTERN, PRIMARY_FILE, VersionMetadata
from registry.service import StoredFile
from registry.storage import ArtifactStore, Digest, Upload
from safety import BackgroundInspection

log = logging.getLogger(__name__)

METADATA_PART = "metadata"
MAX_FILE_PARTS = 8
_FILE_NAME = re.compile(FILE_NAME_PATTERN)
_MEDIA_TYPE = re.compile(r"^[\w.+-]{1,63}/[\w.+-]{1,63}$")
_DEFAULT_MEDIA_TYPE = "application/octet-stream"


@dataclass
class _Part:
    name: str
    media_type: str
    upload: Upload | None = None
    pending: bytearray = field(default_factory=bytearray)
    in_flight: asyncio.Task[None] | None = None
    digest: Digest | None = None
    inspection: BackgroundInspection | None = None
    """Sees every block right after the store does: the pickle scan runs while bytes arrive."""

    def write(self, block: bytes) -> None:
        """Store a block, then hand it to the inspection. Runs in a worker thread."""
        assert self.upload is not None
        self.upload.write(block)
        if self.inspection is not None:
            self.inspection.feed(block)

    def end_inspection(self) -> None:
        if self.inspection is not None:
            self.inspection.close()


@dataclass
class ReceivedUpload:
    """Every file of an upload, finished under temporary keys, plus the parsed metadata."""

    metadata: VersionMetadata
    files: list[_Part]

    def check_digest(self) -> None:
        expected = self.metadata.sha256
        primary = next(p for p in self.files if p.name == PRIMARY_FILE)
        assert primary.digest is not None
        if expected is not None and expected != primary.digest.sha256:
            raise DigestMismatch(
                f"the artifact's sha256 is {primary.digest.sha256}, not {expected} as declared",
                detail={"expected": expected, "actual": primary.digest.sha256},
            )

    def publish(self, database: Database) -> list[StoredFile]:
        """Claim each digest, then move each object under it. Runs in a worker thread.

        The claim commits first so garbage collection, which locks the same row, cannot delete
        an object between our publishing it and our version row referencing it.
        """
        stored = []
        with database.transaction() as session:
            for part in self.files:
                assert part.digest is not None
                repo.claim_blob(session, part.digest.sha256, part.digest.size)
        for part in self.files:
            assert part.upload is not None
            assert part.digest is not None
            part.upload.publish()
            stored.append(
                StoredFile(part.name, part.digest.sha256, part.digest.size, part.media_type)
            )
        return stored

    def discard(self) -> None:
        """Drop whatever temporary objects remain. Runs in a worker thread."""
        for part in self.files:
            part.end_inspection()
            if part.upload is not None:
                part.upload.abort()


class UploadReceiver:
    """Parses one multipart request, streaming file parts into the store."""

    def __init__(
        self,
        store: ArtifactStore,
        *,
        max_file_bytes: int,
        max_metadata_bytes: int,
        part_bytes: int,
        inspect: Callable[[], BackgroundInspection] | None = None,
    ) -> None:
        self._store = store
        self._inspect = inspect
        self._max_file_bytes = max_file_bytes
        self._max_metadata_bytes = max_metadata_bytes
        self._part_bytes = part_bytes
        self._parts: dict[str, _Part] = {}
        self._metadata: bytearray | None = None
        self._parsed_metadata: VersionMetadata | None = None
        self._current: _Part | None = None
        self._current_is_metadata = False
        self._headers: dict[bytes, bytes] = {}
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._file_bytes = 0
        self._ended = False
        self._events: list[tuple[str, Any]] = []

    async def receive(self, request: Request) -> ReceivedUpload:
        content_type, params = parse_options_header(request.headers.get("content-type"))
        if content_type != b"multipart/form-data":
            raise UnsupportedMediaType(
                "an upload must be multipart/form-data with an 'artifact' file part",
                detail={"content_type": content_type.decode("latin-1")},
            )
        boundary = params.get(b"boundary")
        if not boundary:
            raise BadRequest("the multipart content type has no boundary")
        body_limit = self._max_file_bytes + self._max_metadata_bytes + 1024 * 1024
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > body_limit:
            raise self._too_large()
        parser = MultipartParser(boundary, self._callbacks())  # type: ignore[arg-type]
        received = 0
        try:
            async for chunk in request.stream():
                received += len(chunk)
                if received > body_limit:
                    raise self._too_large()
                try:
                    parser.write(chunk)
                except (MultipartParseError, FormParserError) as exc:
                    raise BadRequest(f"malformed multipart body: {exc}") from exc
                await self._drain()
            parser.finalize()
            await self._drain()
            if not self._ended:
                raise BadRequest("the multipart body ended before its closing boundary")
            return self._result()
        except ClientDisconnect as exc:
            await self._discard()
            raise BadRequest("the client disconnected before the upload finished") from exc
        except BaseException:
            await self._discard()
            raise

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"the upload is larger than the {self._max_file_bytes} bytes allowed "
            "(BERTH_MAX_ARTIFACT_BYTES)",
            detail={"max_artifact_bytes": self._max_file_bytes},
        )

    def _result(self) -> ReceivedUpload:
        if PRIMARY_FILE not in self._parts:
            raise InvalidInput(f"the upload has no '{PRIMARY_FILE}' file part")
        metadata = self._parsed_metadata or VersionMetadata()
        return ReceivedUpload(metadata=metadata, files=list(self._parts.values()))

    def _parse_metadata(self) -> None:
        """Validate the metadata the moment its part ends: a bad one fails before the artifact
        is streamed, and a declared digest lets the artifact go straight to its final key."""
        assert self._metadata is not None
        try:
            self._parsed_metadata = VersionMetadata.model_validate_json(bytes(self._metadata))
        except ValidationError as exc:
            raise InvalidInput(
                "the metadata part is not valid: " + _summarise(exc),
                detail=exc.errors(include_url=False, include_context=False, include_input=False),
            ) from exc

    async def _discard(self) -> None:
        # Shielded: a cancelled request must still not leave half-written temporary objects.
        with CancelScope(shield=True):
            for part in self._parts.values():
                if part.in_flight is not None:
                    await asyncio.gather(part.in_flight, return_exceptions=True)
                part.end_inspection()
                if part.upload is not None:
                    await run_in_threadpool(part.upload.abort)

    # --- parser callbacks: record events; the async loop acts on them -----------------------

    def _callbacks(self) -> dict[str, Callable[..., None]]:
        return {
            "on_part_begin": self._on_part_begin,
            "on_header_field": lambda data, start, end: self._header_field.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._header_value.extend(data[start:end]),
            "on_header_end": self._on_header_end,
            "on_headers_finished": lambda: self._events.append(("headers", dict(self._headers))),
            "on_part_data": lambda data, start, end: self._events.append(("data", data[start:end])),
            "on_part_end": lambda: self._events.append(("end", None)),
            "on_end": self._on_end,
        }

    def _on_part_begin(self) -> None:
        self._headers = {}

    def _on_header_end(self) -> None:
        self._headers[bytes(self._header_field).lower()] = bytes(self._header_value)
        self._header_field.clear()
        self._header_value.clear()

    def _on_end(self) -> None:
        self._ended = True

    async def _drain(self) -> None:
        events, self._events = self._events, []
        for kind, value in events:
            if kind == "headers":
                await self._begin_part(value)
            elif kind == "data":
                await self._part_data(value)
            else:
                await self._end_part()

    async def _begin_part(self, headers: dict[bytes, bytes]) -> None:
        _, disposition = parse_options_header(headers.get(b"content-disposition"))
        name = disposition.get(b"name", b"").decode("utf-8", "replace")
        if name == METADATA_PART:
            if self._metadata is not None:
                raise BadRequest("the 'metadata' part appears twice")
            self._metadata = bytearray()
            self._current, self._current_is_metadata = None, True
            return
        if not _FILE_NAME.fullmatch(name):
            raise InvalidInput(
                f"unexpected form part {name[:64]!r}: file parts are named like "
                f"{FILE_NAME_PATTERN} ('{PRIMARY_FILE}', 'onnx', ...) and metadata goes in "
                f"the '{METADATA_PART}' JSON part",
                detail={"part": name[:64]},
            )
        if name in self._parts:
            raise BadRequest(f"the '{name}' part appears twice")
        if len(self._parts) >= MAX_FILE_PARTS:
            raise InvalidInput(f"an upload carries at most {MAX_FILE_PARTS} files")
        media_type = headers.get(b"content-type", b"").decode("latin-1").strip().lower()
        if not _MEDIA_TYPE.fullmatch(media_type):
            media_type = _DEFAULT_MEDIA_TYPE
        declared = self._parsed_metadata.sha256 if self._parsed_metadata else None
        expected = declared if name == PRIMARY_FILE else None
        upload = await run_in_threadpool(
            functools.partial(self._store.begin_upload, expected_sha256=expected)
        )
        inspection = self._inspect() if self._inspect is not None else None
        part = _Part(name=name, media_type=media_type, upload=upload, inspection=inspection)
        self._parts[name] = part
        self._current, self._current_is_metadata = part, False

    async def _part_data(self, data: bytes) -> None:
        if self._current_is_metadata:
            assert self._metadata is not None
            self._metadata.extend(data)
            if len(self._metadata) > self._max_metadata_bytes:
                raise PayloadTooLarge(
                    f"the metadata part is larger than {self._max_metadata_bytes} bytes"
                )
            return
        part = self._current
        if part is None:
            return
        self._file_bytes += len(data)
        if self._file_bytes > self._max_file_bytes:
            raise self._too_large()
        part.pending.extend(data)
        if len(part.pending) >= self._part_bytes:
            await self._flush(part)

    async def _flush(self, part: _Part) -> None:
        """Hand the buffered block to a worker thread, overlapping it with reading the next one."""
        if part.in_flight is not None:
            await part.in_flight
        block, part.pending = bytes(part.pending), bytearray()
        part.in_flight = asyncio.ensure_future(_in_thread(part.write, block))

    async def _end_part(self) -> None:
        part, self._current = self._current, None
        if self._current_is_metadata:
            self._current_is_metadata = False
            self._parse_metadata()
            return
        if part is None:
            return
        if part.in_flight is not None:
            await part.in_flight
            part.in_flight = None
        assert part.upload is not None
        if part.pending:
            await run_in_threadpool(part.write, bytes(part.pending))
            part.pending = bytearray()
        part.end_inspection()
        part.digest = await run_in_threadpool(part.upload.finish)


async def _in_thread(func: Callable[[bytes], None], block: bytes) -> None:
    await run_in_threadpool(func, block)


def _summarise(exc: ValidationError) -> str:
    first = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"
