"""Content-addressed artifact storage: S3 (or any S3-compatible store) or a local directory.

Objects live under a key derived only from their SHA-256, so identical bytes are stored once and no
client-supplied string ever becomes a path or a key. An upload streams into a temporary object
while it is hashed, then `publish()` moves it under its digest. Everything botocore or the
filesystem raises is translated here; nothing above this module sees botocore.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from registry.errors import ArtifactMissing, Misconfigured, StorageUnavailable
from registry.schemas import SHA256_PATTERN

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

_DIGEST = re.compile(SHA256_PATTERN)
_UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")
READ_CHUNK = 1024 * 1024
S3_MIN_PART = 5 * 1024 * 1024


def _checked_digest(sha256: str) -> str:
    # Defence in depth: callers validate too, but a key is only ever built from a real digest.
    if not _DIGEST.fullmatch(sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    return sha256


@dataclass(frozen=True, slots=True)
class Digest:
    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class StoredBlob:
    sha256: str
    size: int
    last_modified: datetime


@dataclass(frozen=True, slots=True)
class PendingUpload:
    """A temporary object (or unfinished multipart upload) some upload left behind or is writing."""

    id: str
    started_at: datetime
    detail: str = ""
    direct: bool = False
    """An unfinished multipart upload straight to a digest's key (`id` is then the digest)."""


class Upload(ABC):
    """One upload in progress. Not thread-safe: one writer at a time."""

    def __init__(self) -> None:
        self._hasher = hashlib.sha256()
        self._size = 0

    @property
    def size(self) -> int:
        return self._size

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes; they are hashed here so the digest is ready the moment the stream ends."""
        self._hasher.update(data)
        self._size += len(data)
        self._write(data)

    def finish(self) -> Digest:
        """Make every byte durable under the temporary key and return the digest."""
        self._finish()
        return Digest(self._hasher.hexdigest(), self._size)

    @abstractmethod
    def _write(self, data: bytes | bytearray | memoryview) -> None: ...

    @abstractmethod
    def _finish(self) -> None: ...

    @abstractmethod
    def publish(self) -> None:
        """Move the finished object under its digest, refreshing the stored object's age."""

    @abstractmethod
    def abort(self) -> None:
        """Drop the temporary object. Safe to call at any point, more than once."""


class ArtifactStore(ABC):
    """Where artifact bytes live. Keys derive only from digests."""

    description: str

    @abstractmethod
    def begin_upload(self, *, expected_sha256: str | None = None) -> Upload:
        """Start an upload; `expected_sha256`, if the uploader declared it, lets a store write
        straight to the final key (publishing still requires the computed digest to match)."""

    @abstractmethod
    def iter_bytes(self, sha256: str) -> Iterator[bytes]:
        """Stream an object's bytes; `ArtifactMissing` if it is not there."""

    def local_path(self, sha256: str) -> Path | None:
        """A filesystem path to serve the object from directly, where the store has one."""
        return None

    def presigned_url(self, sha256: str, *, expires: int, filename: str) -> str | None:
        """A short-lived URL to fetch the object from the store itself, where supported."""
        return None

    @abstractmethod
    def exists(self, sha256: str) -> bool: ...

    @abstractmethod
    def list_blobs(self) -> Iterator[StoredBlob]: ...

    @abstractmethod
    def list_pending(self) -> Iterator[PendingUpload]: ...

    @abstractmethod
    def delete_blob(self, sha256: str) -> None: ...

    @abstractmethod
    def delete_pending(self, pending: PendingUpload) -> None: ...

    @abstractmethod
    def check(self) -> None:
        """Raise `StorageUnavailable` unless the store answers and is usable."""


def open_store(
    url: str, *, timeout: float = 5.0, part_size: int = 8 * 1024 * 1024
) -> ArtifactStore:
    """Open the store `url` names: `s3://bucket[/prefix]` or `file:///absolute/path`."""
    try:
        parsed = urlparse(url)
    except ValueError as exc:
        raise Misconfigured(f"artifact store URL {url!r} does not parse: {exc}") from exc
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise Misconfigured(f"artifact store URL {url!r} names no bucket")
        return S3Store(parsed.netloc, parsed.path.strip("/"), timeout=timeout, part_size=part_size)
    if parsed.scheme == "file":
        return FileStore(Path(unquote(parsed.path)))
    raise Misconfigured(
        f"unsupported artifact store {url!r}: use s3://bucket/prefix or file:///path"
    )


# --- local directory ------------------------------------------------------------------------


class FileStore(ArtifactStore):
    """Objects as files under `root/blobs/sha256/ab/<digest>`; uploads under `root/uploads/`."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.description = self.root.as_uri()
        self._blobs = self.root / "blobs" / "sha256"
        self._uploads = self.root / "uploads"

    def _path(self, sha256: str) -> Path:
        digest = _checked_digest(sha256)
        return self._blobs / digest[:2] / digest

    def begin_upload(self, *, expected_sha256: str | None = None) -> Upload:
        # A local rename is as cheap as writing in place, so the declared digest is not needed.
        with _os_errors("start an upload"):
            self._uploads.mkdir(parents=True, exist_ok=True)
            return _FileUpload(self, self._uploads / f"{uuid.uuid4().hex}.part")

    def iter_bytes(self, sha256: str) -> Iterator[bytes]:
        path = self._path(sha256)
        try:
            handle = path.open("rb")
        except FileNotFoundError as exc:
            raise ArtifactMissing(f"object {sha256} is missing from {self.description}") from exc
        return _iter_file(handle)

    def local_path(self, sha256: str) -> Path | None:
        path = self._path(sha256)
        return path if path.is_file() else None

    def exists(self, sha256: str) -> bool:
        return self._path(sha256).is_file()

    def list_blobs(self) -> Iterator[StoredBlob]:
        if not self._blobs.is_dir():
            return
        for shard in sorted(self._blobs.iterdir()):
            for path in sorted(shard.iterdir()):
                if not _DIGEST.fullmatch(path.name):
                    continue
                stat = path.stat()
                yield StoredBlob(path.name, stat.st_size, _mtime(stat.st_mtime))

    def list_pending(self) -> Iterator[PendingUpload]:
        if not self._uploads.is_dir():
            return
        for path in sorted(self._uploads.glob("*.part")):
            if _UPLOAD_ID.fullmatch(path.stem):
                yield PendingUpload(path.stem, _mtime(path.stat().st_mtime))

    def delete_blob(self, sha256: str) -> None:
        with _os_errors("delete an object"):
            self._path(sha256).unlink(missing_ok=True)

    def delete_pending(self, pending: PendingUpload) -> None:
        if not _UPLOAD_ID.fullmatch(pending.id):
            raise ValueError(f"not an upload id: {pending.id!r}")
        with _os_errors("delete an unfinished upload"):
            (self._uploads / f"{pending.id}.part").unlink(missing_ok=True)

    def check(self) -> None:
        with _os_errors("reach the artifact directory"):
            self._uploads.mkdir(parents=True, exist_ok=True)
            if not os.access(self._uploads, os.W_OK):
                raise StorageUnavailable(f"artifact directory {self.root} is not writable")


class _FileUpload(Upload):
    def __init__(self, store: FileStore, path: Path) -> None:
        super().__init__()
        self._store = store
        self._path = path
        self._file: IO[bytes] | None = path.open("xb")
        self._sha256: str | None = None

    def _write(self, data: bytes | bytearray | memoryview) -> None:
        assert self._file is not None, "write after finish"
        with _os_errors("write an upload"):
            self._file.write(data)

    def _finish(self) -> None:
        assert self._file is not None, "finish twice"
        with _os_errors("finish an upload"):
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
        self._file = None
        self._sha256 = self._hasher.hexdigest()

    def publish(self) -> None:
        assert self._sha256 is not None, "publish before finish"
        target = self._store._path(self._sha256)
        with _os_errors("publish an object"):
            target.parent.mkdir(parents=True, exist_ok=True)
            # Atomic, and replacing an existing identical object gives it a fresh mtime, which is
            # what keeps garbage collection's grace period away from it.
            os.replace(self._path, target)
            _fsync_dir(target.parent)

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._path.unlink(missing_ok=True)


def _iter_file(handle: IO[bytes]) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(READ_CHUNK):
            yield chunk


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _mtime(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


@contextmanager
def _os_errors(action: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise StorageUnavailable(f"could not {action} in the artifact directory: {exc}") from exc


# --- S3 -------------------------------------------------------------------------------------


class S3Store(ArtifactStore):
    """Objects under `prefix/blobs/sha256/ab/<digest>`; uploads under `prefix/uploads/`.

    Credentials, region and endpoint come from boto3's own configuration (`AWS_*` variables,
    including `AWS_ENDPOINT_URL` for MinIO and friends).
    """

    def __init__(self, bucket: str, prefix: str, *, timeout: float, part_size: int) -> None:
        self.bucket = bucket
        self.prefix = f"{prefix}/" if prefix else ""
        self.description = f"s3://{bucket}/{prefix}"
        self.part_size = max(part_size, S3_MIN_PART)
        custom_endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get(
            "AWS_ENDPOINT_URL"
        )
        config = Config(
            connect_timeout=timeout,
            # Per socket read, not per transfer: a part that takes long to send is not cut off,
            # but a store that accepts the connection and then says nothing fails in seconds
            # (two attempts: at most about 4x the timeout in all).
            read_timeout=timeout * 2,
            retries={"max_attempts": 2, "mode": "standard"},
            # Newer botocore adds CRC checksums by default; many S3-compatible stores reject them.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            signature_version="s3v4",
            # Virtual-hosted buckets need DNS the custom endpoints (MinIO, moto) do not have.
            s3={"addressing_style": "path" if custom_endpoint else "auto"},
            max_pool_connections=32,
        )
        self.client: S3Client = boto3.session.Session().client("s3", config=config)
        self._copy_config = TransferConfig(multipart_threshold=4 * 1024**3, max_concurrency=4)
        # Shared by every upload; each keeps at most _S3Upload.PARTS_IN_FLIGHT parts in it.
        self._part_pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="berth-s3-part")

    def _key(self, sha256: str) -> str:
        digest = _checked_digest(sha256)
        return f"{self.prefix}blobs/sha256/{digest[:2]}/{digest}"

    def _upload_key(self, upload_id: str) -> str:
        if not _UPLOAD_ID.fullmatch(upload_id):
            raise ValueError(f"not an upload id: {upload_id!r}")
        return f"{self.prefix}uploads/{upload_id}"

    def begin_upload(self, *, expected_sha256: str | None = None) -> Upload:
        if expected_sha256 is not None:
            _checked_digest(expected_sha256)
        return _S3Upload(self, uuid.uuid4().hex, expected_sha256=expected_sha256)

    def iter_bytes(self, sha256: str) -> Iterator[bytes]:
        with _s3_errors(f"read object {sha256}"):
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(sha256))["Body"]
        return self._iter_body(body, sha256)

    def _iter_body(self, body: Any, sha256: str) -> Iterator[bytes]:
        with _s3_errors(f"read object {sha256}"):
            try:
                yield from body.iter_chunks(READ_CHUNK)
            finally:
                body.close()

    def presigned_url(self, sha256: str, *, expires: int, filename: str) -> str:
        with _s3_errors("presign a download"):
            return self.client.generate_presigned_url(
                "get_object",
                Params={
                    "Bucket": self.bucket,
                    "Key": self._key(sha256),
                    "ResponseContentDisposition": f'attachment; filename="{filename}"',
                },
                ExpiresIn=expires,
            )

    def exists(self, sha256: str) -> bool:
        try:
            with _s3_errors(f"look up object {sha256}"):
                self.client.head_object(Bucket=self.bucket, Key=self._key(sha256))
        except ArtifactMissing:
            return False
        return True

    def list_blobs(self) -> Iterator[StoredBlob]:
        paginator = self.client.get_paginator("list_objects_v2")
        with _s3_errors("list objects"):
            for page in paginator.paginate(
                Bucket=self.bucket, Prefix=f"{self.prefix}blobs/sha256/"
            ):
                for item in page.get("Contents", []):
                    digest = item["Key"].rsplit("/", 1)[-1]
                    if _DIGEST.fullmatch(digest):
                        yield StoredBlob(digest, item["Size"], item["LastModified"])

    def list_pending(self) -> Iterator[PendingUpload]:
        prefix = f"{self.prefix}uploads/"
        with _s3_errors("list unfinished uploads"):
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            ):
                for item in page.get("Contents", []):
                    upload_id = item["Key"][len(prefix) :]
                    if _UPLOAD_ID.fullmatch(upload_id):
                        yield PendingUpload(upload_id, item["LastModified"])
            for mpu_page in self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=prefix
            ):
                for mpu in mpu_page.get("Uploads", []):
                    upload_id = mpu["Key"][len(prefix) :]
                    if _UPLOAD_ID.fullmatch(upload_id):
                        yield PendingUpload(upload_id, mpu["Initiated"], detail=mpu["UploadId"])
            # Uploads with a declared digest write straight under blobs/; a crash leaves an
            # unfinished multipart upload there, invisible as an object but billed all the same.
            for mpu_page in self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=f"{self.prefix}blobs/sha256/"
            ):
                for mpu in mpu_page.get("Uploads", []):
                    digest = mpu["Key"].rsplit("/", 1)[-1]
                    if _DIGEST.fullmatch(digest):
                        yield PendingUpload(
                            digest, mpu["Initiated"], detail=mpu["UploadId"], direct=True
                        )

    def delete_blob(self, sha256: str) -> None:
        with _s3_errors(f"delete object {sha256}"):
            self.client.delete_object(Bucket=self.bucket, Key=self._key(sha256))

    def delete_pending(self, pending: PendingUpload) -> None:
        key = self._key(pending.id) if pending.direct else self._upload_key(pending.id)
        if pending.direct and not pending.detail:
            raise ValueError("a direct pending upload is a multipart upload id, never an object")
        with _s3_errors("delete an unfinished upload"):
            if pending.detail:
                self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=pending.detail
                )
            else:
                self.client.delete_object(Bucket=self.bucket, Key=key)

    def check(self) -> None:
        try:
            with _s3_errors(f"reach bucket {self.bucket!r}"):
                self.client.head_bucket(Bucket=self.bucket)
        except ArtifactMissing as exc:
            # A HEAD answer has no body, so a missing bucket arrives as a bare 404, which reads
            # like a missing object; for the store as a whole it means the store is unusable.
            raise StorageUnavailable(
                f"bucket {self.bucket!r} does not exist", detail={"store_error": "NoSuchBucket"}
            ) from exc


class _S3Upload(Upload):
    """Streams an upload to S3 in parts, at most `PARTS_IN_FLIGHT` of them on the wire at once.

    Two modes. When the uploader declared the digest, the multipart upload goes straight to the
    content-addressed key and is completed by `publish()` only after the computed digest matched,
    so nothing becomes visible under a digest it does not have and no copy is needed. Otherwise it
    streams to `uploads/<id>` and `publish()` copies it under the digest once that is known.
    Memory stays at about `PARTS_IN_FLIGHT + 1` parts.
    """

    # Measured with bench/upload_memory.py (200 MB to moto): 2 in flight gave the same
    # throughput as 1 (0.68x vs 0.67x a direct upload_file) for 13 MB more peak memory.
    PARTS_IN_FLIGHT = 1

    def __init__(self, store: S3Store, upload_id: str, *, expected_sha256: str | None) -> None:
        super().__init__()
        self._store = store
        self._client = store.client
        self._expected = expected_sha256
        self._key = store._key(expected_sha256) if expected_sha256 else store._upload_key(upload_id)
        self._buffer = bytearray()
        self._multipart_id: str | None = None
        self._part_count = 0
        self._in_flight: list[Future[dict[str, Any]]] = []
        self._parts: list[dict[str, Any]] = []
        self._sha256: str | None = None
        self._completed = False
        self._published = False

    def _write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._buffer and len(data) >= self._store.part_size:
            self._send_part(bytes(data) if not isinstance(data, bytes) else data)
            return
        self._buffer += data
        if len(self._buffer) >= self._store.part_size:
            self._send_part(bytes(self._buffer))
            self._buffer = bytearray()

    def _send_part(self, data: bytes) -> None:
        if self._multipart_id is None:
            with _s3_errors("start a multipart upload"):
                self._multipart_id = self._client.create_multipart_upload(
                    Bucket=self._store.bucket, Key=self._key
                )["UploadId"]
        while len(self._in_flight) >= self.PARTS_IN_FLIGHT:
            self._parts.append(self._in_flight.pop(0).result())
        self._part_count += 1
        self._in_flight.append(
            self._store._part_pool.submit(self._upload_part, self._part_count, data)
        )

    def _upload_part(self, number: int, data: bytes) -> dict[str, Any]:
        with _s3_errors("upload a part"):
            response = self._client.upload_part(
                Bucket=self._store.bucket,
                Key=self._key,
                UploadId=self._multipart_id or "",
                PartNumber=number,
                Body=data,
            )
        return {"PartNumber": number, "ETag": response["ETag"]}

    def _drain(self) -> None:
        try:
            for future in self._in_flight:
                self._parts.append(future.result())
        finally:
            self._in_flight = []

    def _finish(self) -> None:
        if self._multipart_id is not None and self._buffer:
            self._send_part(bytes(self._buffer))
            self._buffer = bytearray()
        self._drain()
        self._sha256 = self._hasher.hexdigest()
        if self._expected is None:
            self._complete()

    def _complete(self) -> None:
        with _s3_errors("finish an upload"):
            if self._multipart_id is None:
                self._client.put_object(
                    Bucket=self._store.bucket, Key=self._key, Body=bytes(self._buffer)
                )
            else:
                self._client.complete_multipart_upload(
                    Bucket=self._store.bucket,
                    Key=self._key,
                    UploadId=self._multipart_id,
                    MultipartUpload={"Parts": sorted(self._parts, key=lambda p: p["PartNumber"])},  # type: ignore[arg-type]
                )
        self._buffer = bytearray()
        self._completed = True

    def publish(self) -> None:
        assert self._sha256 is not None, "publish before finish"
        if self._expected is not None:
            if self._sha256 != self._expected:
                raise ValueError("publish of an upload whose digest does not match its key")
            # Completing writes the object under its digest; for an existing digest it rewrites
            # it, refreshing LastModified, which keeps garbage collection's grace period away.
            self._complete()
            self._published = True
            return
        with _s3_errors("publish an object"):
            # A server-side copy, even when the digest already exists, for the same reason.
            self._client.copy(
                {"Bucket": self._store.bucket, "Key": self._key},
                self._store.bucket,
                self._store._key(self._sha256),
                Config=self._store._copy_config,
            )
        self._published = True
        self._discard_temporary()

    def abort(self) -> None:
        if self._published and self._expected is not None:
            return  # the object is the real one now
        for future in self._in_flight:
            future.cancel()
        self._in_flight = []
        self._discard_temporary()

    def _discard_temporary(self) -> None:
        # Best effort: anything left behind is an old entry that gc removes.
        try:
            if self._multipart_id is not None and not self._completed:
                self._client.abort_multipart_upload(
                    Bucket=self._store.bucket, Key=self._key, UploadId=self._multipart_id
                )
            elif self._completed and self._expected is None:
                self._client.delete_object(Bucket=self._store.bucket, Key=self._key)
        except (BotoCoreError, ClientError) as exc:
            log.warning("could not clean up upload %s: %s", self._key, exc)
        self._multipart_id = None
        self._completed = False


_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}


@contextmanager
def _s3_errors(action: str) -> Iterator[None]:
    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        if code in _MISSING_CODES:
            raise ArtifactMissing(f"could not {action}: not in the artifact store") from exc
        raise StorageUnavailable(
            f"the artifact store refused to {action}: {code} {error.get('Message', '')}".strip(),
            detail={"store_error": code},
        ) from exc
    except BotoCoreError as exc:
        raise StorageUnavailable(
            f"the artifact store is unreachable (could not {action}): {exc}"
        ) from exc
