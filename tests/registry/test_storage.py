"""The artifact store's contract, proven against both the local directory and S3 (moto over HTTP).

Every guarantee the upload path and garbage collection lean on is checked here at the store's own
interface: digests, deduplication, the age refresh on publish, multipart, abort, abandoned-upload
listing, key safety, and the translation of every failure into the registry's error tree.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from registry.errors import ArtifactMissing, StorageUnavailable
from registry.storage import ArtifactStore, FileStore, PendingUpload, S3Store, open_store
from tests.fixtures.factories import random_bytes, sha256
from tests.fixtures.servers import free_port
from tests.fixtures.storage_state import (
    blob_keys,
    file_tree,
    multipart_uploads,
    raw_client,
    raw_objects,
    temporary_keys,
)

MiB = 1024 * 1024
PART = 5 * MiB


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "s3":
        url = request.getfixturevalue("s3_store_url")
    else:
        url = (tmp_path / "store").as_uri()
    return open_store(url, timeout=2.0, part_size=PART)


def put(store: ArtifactStore, data: bytes, *, chunk: int = 64 * 1024) -> str:
    """Upload `data` through the full write → finish → publish path; returns the digest."""
    upload = store.begin_upload()
    for start in range(0, len(data), chunk):
        upload.write(data[start : start + chunk])
    digest = upload.finish()
    upload.publish()
    return digest.sha256


def read(store: ArtifactStore, digest: str) -> bytes:
    return b"".join(store.iter_bytes(digest))


def stored_age(store: ArtifactStore, digest: str) -> datetime:
    (blob,) = [b for b in store.list_blobs() if b.sha256 == digest]
    return blob.last_modified


def uneven_chunks(data: bytes) -> Iterator[bytes]:
    """Chunks that never line up with a part: small, odd-sized, and one larger than a part."""
    sizes = [1, 777, 3 * MiB + 5, PART + 12_345, 2 * MiB - 1, 65_537]
    start, i = 0, 0
    while start < len(data):
        size = sizes[i % len(sizes)]
        yield data[start : start + size]
        start += size
        i += 1


# --- round trip -----------------------------------------------------------------------------


def test_write_finish_publish_round_trips_bytes_and_digest(store: ArtifactStore) -> None:
    data = random_bytes(300_000)
    upload = store.begin_upload()
    upload.write(data[:1000])
    upload.write(memoryview(data)[1000:200_000])
    upload.write(bytearray(data[200_000:]))
    digest = upload.finish()

    assert digest.sha256 == sha256(data)
    assert digest.size == len(data) == upload.size
    assert not store.exists(digest.sha256), "published before publish()"

    upload.publish()

    assert store.exists(digest.sha256)
    assert read(store, digest.sha256) == data
    assert [(b.sha256, b.size) for b in store.list_blobs()] == [(digest.sha256, len(data))]
    assert blob_keys(store) == {digest.sha256}
    assert temporary_keys(store) == set(), "publish left the temporary object behind"


def test_an_empty_artifact_has_the_empty_digest(store: ArtifactStore) -> None:
    digest = put(store, b"")
    assert digest == sha256(b"")
    assert read(store, digest) == b""


def test_identical_bytes_are_stored_once(store: ArtifactStore) -> None:
    data = random_bytes(50_000)
    first = put(store, data, chunk=1000)
    second = put(store, data, chunk=7777)

    assert first == second == sha256(data)
    objects = raw_objects(store)
    assert list(objects.values()) == [len(data)], f"expected one object, found {objects}"
    assert read(store, first) == data


def test_publish_refreshes_the_stored_objects_age(store: ArtifactStore) -> None:
    data = random_bytes(10_000)
    digest = put(store, data)
    if isinstance(store, FileStore):
        # A file's age is its mtime: make it a day old, as if uploaded yesterday.
        blob_path = store.local_path(digest)
        assert blob_path is not None
        day_ago = time.time() - 86_400
        os.utime(blob_path, (day_ago, day_ago))
        assert stored_age(store, digest) < datetime.now(UTC) - timedelta(hours=23)
    else:
        # S3 has no way to backdate an object; LastModified has one-second resolution, so let a
        # second and a half pass to make a refresh observable.
        time.sleep(1.5)
    before = stored_age(store, digest)

    assert put(store, data) == digest

    after = stored_age(store, digest)
    assert after > before
    assert after >= datetime.now(UTC) - timedelta(seconds=5)
    assert read(store, digest) == data


# --- multipart (S3) -------------------------------------------------------------------------


def test_large_uneven_writes_go_multipart_on_s3_with_the_right_bytes(s3_store_url: str) -> None:
    store = open_store(s3_store_url, part_size=PART)
    assert isinstance(store, S3Store)
    data = random_bytes(12 * MiB + 4321)
    upload = store.begin_upload()
    chunks = list(uneven_chunks(data))
    assert b"".join(chunks) == data
    for chunk in chunks[:4]:
        upload.write(chunk)

    # Mid-stream, the bytes are going out as a real multipart upload, part by part (from a
    # worker thread, so give the first part a moment to land).
    (in_progress,) = multipart_uploads(store)
    assert in_progress.startswith(f"{store.prefix}uploads/")
    mpu = raw_client().list_multipart_uploads(Bucket=store.bucket, Prefix=store.prefix)
    deadline = time.monotonic() + 10
    parts: list[Any] = []
    while not parts and time.monotonic() < deadline:
        parts = list(
            raw_client()
            .list_parts(
                Bucket=store.bucket, Key=in_progress, UploadId=mpu["Uploads"][0]["UploadId"]
            )
            .get("Parts", [])
        )
        time.sleep(0.05)
    assert parts, "no part was sent although more than a part was written"
    assert all(p["Size"] >= PART for p in parts), "a non-final part is below S3's minimum"

    for chunk in chunks[4:]:
        upload.write(chunk)
    digest = upload.finish()
    upload.publish()

    assert digest.sha256 == sha256(data)
    assert digest.size == len(data)
    assert read(store, digest.sha256) == data
    assert multipart_uploads(store) == []
    assert raw_objects(store) == {f"blobs/sha256/{digest.sha256[:2]}/{digest.sha256}": len(data)}


def test_a_write_of_exactly_whole_parts_completes(s3_store_url: str) -> None:
    store = open_store(s3_store_url, part_size=PART)
    data = random_bytes(2 * PART)
    digest = put(store, data, chunk=PART)
    assert digest == sha256(data)
    assert read(store, digest) == data
    assert multipart_uploads(store) == []


# --- abort and abandoned uploads ------------------------------------------------------------


def test_abort_mid_stream_removes_the_temporary_object(store: ArtifactStore) -> None:
    upload = store.begin_upload()
    upload.write(random_bytes(PART + 1))
    # The bytes really are somewhere before the abort, so the abort has something to remove.
    assert temporary_keys(store) or multipart_uploads(store)

    upload.abort()
    upload.abort()  # safe more than once

    assert temporary_keys(store) == set()
    assert multipart_uploads(store) == []
    assert list(store.list_pending()) == []
    assert blob_keys(store) == set()


def test_abort_after_finish_removes_the_finished_temporary_object(store: ArtifactStore) -> None:
    upload = store.begin_upload()
    upload.write(random_bytes(3 * MiB))
    upload.finish()
    assert len(temporary_keys(store)) == 1

    upload.abort()

    assert raw_objects(store) == {}
    assert list(store.list_pending()) == []


def test_abort_after_publish_keeps_the_published_object(store: ArtifactStore) -> None:
    data = random_bytes(1000)
    upload = store.begin_upload()
    upload.write(data)
    digest = upload.finish()
    upload.publish()

    upload.abort()

    assert read(store, digest.sha256) == data
    assert temporary_keys(store) == set()


def test_list_pending_shows_abandoned_uploads_until_deleted(store: ArtifactStore) -> None:
    started = datetime.now(UTC)
    streaming = store.begin_upload()
    streaming.write(random_bytes(PART + 10))  # past one part: a multipart upload on S3
    finished = store.begin_upload()
    finished.write(random_bytes(1000))
    finished.finish()  # durable under its temporary key, never published
    done = store.begin_upload()
    done.write(random_bytes(100))
    sha256_of_done = done.finish().sha256
    done.publish()  # not abandoned: must not be listed

    pending = list(store.list_pending())

    assert len(pending) == 2, pending
    if isinstance(store, S3Store):
        # One unfinished multipart upload (carrying its UploadId) and one temporary object.
        assert sorted(bool(p.detail) for p in pending) == [False, True]
    for entry in pending:
        assert entry.started_at <= datetime.now(UTC)
        if not entry.detail:
            assert entry.started_at >= started - timedelta(seconds=2)
        # moto answers every multipart upload's `Initiated` with a fixed 2010 date (real S3 and
        # MinIO give the true time), so the age of a multipart upload is not checkable here.

    for entry in pending:
        store.delete_pending(entry)

    assert list(store.list_pending()) == []
    assert temporary_keys(store) == set()
    assert multipart_uploads(store) == []
    assert len(blob_keys(store)) == 1, "deleting abandoned uploads touched a published object"
    streaming.abort()  # only closes this process's file handle; nothing is left to delete
    assert raw_objects(store) == {f"blobs/sha256/{sha256_of_done[:2]}/{sha256_of_done}": 100}


# --- keys -----------------------------------------------------------------------------------

NOT_DIGESTS = [
    "../../etc/passwd",
    "../../victim",
    "/etc/passwd",
    "a" * 63,
    "A" * 64,
    "a" * 64 + "\n",
    "a" * 63 + "/",
    "",
]


@pytest.mark.parametrize("not_a_digest", NOT_DIGESTS)
def test_a_key_is_only_ever_built_from_a_real_digest(
    store: ArtifactStore, tmp_path: Path, not_a_digest: str
) -> None:
    # A file where `../../victim` would land if the store joined it onto its blob directory.
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    put(store, b"something real")
    before_outside = file_tree(tmp_path)
    before_store = raw_objects(store)

    for attempt in (
        store.exists,
        store.iter_bytes,
        store.delete_blob,
    ):
        with pytest.raises(ValueError, match="not a sha256 hex digest"):
            attempt(not_a_digest)
    # The store-specific ways in: a filesystem path, a presigned URL.
    specific = (
        store.local_path
        if isinstance(store, FileStore)
        else lambda d: store.presigned_url(d, expires=60, filename="x")
    )
    with pytest.raises(ValueError, match="not a sha256 hex digest"):
        specific(not_a_digest)
    with pytest.raises(ValueError, match="not an upload id"):
        store.delete_pending(PendingUpload(not_a_digest, datetime.now(UTC)))

    assert file_tree(tmp_path) == before_outside
    assert raw_objects(store) == before_store
    assert victim.read_bytes() == b"precious"


# --- failures -------------------------------------------------------------------------------


def test_a_missing_object_is_artifact_missing(store: ArtifactStore) -> None:
    absent = sha256(b"never uploaded")
    assert not store.exists(absent)
    with pytest.raises(ArtifactMissing):
        read(store, absent)


def test_an_object_deleted_behind_the_stores_back_is_artifact_missing(
    store: ArtifactStore,
) -> None:
    digest = put(store, random_bytes(100))
    store.delete_blob(digest)
    store.delete_blob(digest)  # idempotent
    assert not store.exists(digest)
    with pytest.raises(ArtifactMissing):
        read(store, digest)


@pytest.fixture
def unreachable_s3(monkeypatch: pytest.MonkeyPatch) -> S3Store:
    """An S3 store whose endpoint is a closed port on this machine."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "berth-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "berth-test-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    store = open_store("s3://nowhere/artifacts", timeout=2.0, part_size=PART)
    assert isinstance(store, S3Store)
    return store


def _small_upload(store: ArtifactStore) -> None:
    upload = store.begin_upload()
    upload.write(b"x" * 1000)
    upload.finish()


def _multipart_upload(store: ArtifactStore) -> None:
    store.begin_upload().write(b"x" * (PART + 1))


UNREACHABLE_OPERATIONS = {
    "check": lambda s: s.check(),
    "exists": lambda s: s.exists(sha256(b"a")),
    "read": lambda s: s.iter_bytes(sha256(b"a")),
    "delete": lambda s: s.delete_blob(sha256(b"a")),
    "list_blobs": lambda s: list(s.list_blobs()),
    "list_pending": lambda s: list(s.list_pending()),
    "small_upload": _small_upload,
    "multipart_upload": _multipart_upload,
}


@pytest.mark.parametrize("operation", sorted(UNREACHABLE_OPERATIONS))
def test_unreachable_s3_is_storage_unavailable_within_seconds(
    unreachable_s3: S3Store, operation: str
) -> None:
    started = time.monotonic()
    with pytest.raises(StorageUnavailable) as raised:
        UNREACHABLE_OPERATIONS[operation](unreachable_s3)
    elapsed = time.monotonic() - started

    assert elapsed < 10, f"{operation} took {elapsed:.1f} s to give up"
    assert "unreachable" in raised.value.message
    assert raised.value.code == "storage_unavailable"
    # Translated at the boundary: the botocore error is the cause, never the error itself.
    assert raised.value.__cause__ is not None
    assert type(raised.value.__cause__).__module__.startswith("botocore")


def test_a_missing_bucket_is_storage_unavailable_not_artifact_missing(s3_endpoint: str) -> None:
    store = open_store("s3://berth-no-such-bucket/x", part_size=PART)
    with pytest.raises(StorageUnavailable):
        store.check()
    with pytest.raises(StorageUnavailable):
        _small_upload(store)


def test_an_unwritable_directory_is_storage_unavailable(tmp_path: Path) -> None:
    # A regular file where the store's root directory should be: no directory can be made.
    blocker = tmp_path / "root"
    blocker.write_bytes(b"")
    store = open_store(blocker.as_uri())
    with pytest.raises(StorageUnavailable):
        store.check()
    with pytest.raises(StorageUnavailable):
        store.begin_upload()


# --- uploads with a declared digest go straight to their final key (S3) ----------------------


def _s3_store(s3_store_url: str) -> S3Store:
    store = open_store(s3_store_url, part_size=5 * 1024 * 1024)
    assert isinstance(store, S3Store)
    return store


def test_a_declared_digest_streams_straight_to_the_final_key(s3_store_url: str) -> None:
    store = _s3_store(s3_store_url)
    data = random_bytes(12 * 1024 * 1024 + 5)
    upload = store.begin_upload(expected_sha256=sha256(data))
    for chunk in uneven_chunks(data):
        upload.write(chunk)
    digest = upload.finish()
    assert digest.sha256 == sha256(data)
    # Not visible under the digest until published, and never a temporary copy.
    assert blob_keys(store) == set()
    assert temporary_keys(store) == set()
    upload.publish()
    upload.abort()  # after publish: keeps the object
    assert blob_keys(store) == {sha256(data)}
    assert temporary_keys(store) == set()
    assert multipart_uploads(store) == []
    assert read(store, sha256(data)) == data


def test_a_wrong_declared_digest_never_becomes_visible(s3_store_url: str) -> None:
    store = _s3_store(s3_store_url)
    data = random_bytes(11 * 1024 * 1024)
    claimed = sha256(b"something else")
    upload = store.begin_upload(expected_sha256=claimed)
    upload.write(data)
    assert upload.finish().sha256 == sha256(data)
    with pytest.raises(ValueError, match="does not match"):
        upload.publish()
    upload.abort()
    assert blob_keys(store) == set()
    assert multipart_uploads(store) == []


def test_an_abandoned_direct_upload_is_pending_and_gc_can_abort_it(s3_store_url: str) -> None:
    store = _s3_store(s3_store_url)
    kept = random_bytes(1000)
    put(store, kept)
    data = random_bytes(11 * 1024 * 1024)
    upload = store.begin_upload(expected_sha256=sha256(data))
    upload.write(data)  # two parts sent, never finished: a crash mid-upload
    pending = [p for p in store.list_pending() if p.direct]
    assert [p.id for p in pending] == [sha256(data)]
    store.delete_pending(pending[0])
    assert multipart_uploads(store) == []
    assert blob_keys(store) == {sha256(kept)}, "aborting a direct upload never deletes an object"
