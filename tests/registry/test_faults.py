"""Faults through the HTTP API: a dependency down, and the registry killed mid-upload.

The promise under test: a failure answers quickly with 503 naming what is down, in the uniform
error body; and whatever happens, no version row ever exists without its object, while whatever
an interrupted upload left behind is garbage that `collect_garbage` removes.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from registry import repository as repo
from registry.config import RegistrySettings
from registry.db import Database
from registry.service import collect_garbage
from registry.storage import ArtifactStore, FileStore, S3Store, open_store
from tests.conftest import Backend, RunningRegistry, make_settings, run_registry
from tests.fixtures.factories import random_bytes, sha256, upload, upload_ok
from tests.fixtures.servers import ServiceProcess, free_port
from tests.fixtures.storage_state import (
    blob_keys,
    leftovers,
    raw_client,
    raw_objects,
    referenced_digests,
    version_count,
)
from tests.fixtures.waiting import eventually

MiB = 1024 * 1024
PART = 5 * MiB
FAIL_FAST = 10.0
"""Seconds. 'Within a few seconds' with generous room for a loaded CI machine; a hang is 60+."""


def assert_error_body(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    body: dict[str, object] = response.json()
    assert set(body) == {"error", "message", "detail"}
    assert body["error"] == code
    assert isinstance(body["message"], str)
    assert body["message"]
    return body


def timed(call: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


# --- S3 unreachable -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def silent_server() -> Iterator[int]:
    """A port that accepts TCP connections and then never says a word, like a hung server."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield int(sock.getsockname()[1])


@pytest.fixture(params=["closed-port", "silent-server"])
def s3_down_registry(
    request: pytest.FixtureRequest,
    postgres_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[RunningRegistry]:
    """A registry on a real database whose S3 endpoint is a closed port, or a hung server."""
    if request.param == "closed-port":
        port = free_port()
    else:
        port = request.getfixturevalue("silent_server")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "berth-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "berth-test-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    backend = Backend("postgres+dead-s3", postgres_url, "s3://berth-unreachable/artifacts")
    # 1 s: the silent server costs two attempts of a read timeout of twice this.
    settings = make_settings(backend, tmp_path, storage_timeout_seconds=1.0, upload_part_bytes=PART)
    yield from run_registry(settings)


@pytest.mark.parametrize("size", [1000, PART + 1], ids=["one-request", "multipart"])
def test_s3_unreachable_upload_is_503_and_writes_no_row(
    s3_down_registry: RunningRegistry, size: int
) -> None:
    registry = s3_down_registry
    # The multipart case fails on its first part, while the client is still sending: give the
    # body a size that fits in loopback socket buffers so the client reads the early answer.
    response, elapsed = timed(lambda: upload(registry.api, "churn", random_bytes(size)))

    body = assert_error_body(response, 503, "storage_unavailable")
    assert "artifact store" in str(body["message"])
    assert elapsed < FAIL_FAST
    assert version_count(registry.db) == 0
    assert_error_body(registry.api.get("/models/churn"), 404, "model_not_found")
    with registry.db.transaction(write=False) as session:
        assert repo.get_model(session, "churn") is None


def test_s3_unreachable_readiness_names_the_store(s3_down_registry: RunningRegistry) -> None:
    response = httpx.get(s3_down_registry.url + "/readyz", timeout=30)
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["database"] == "ok"
    assert "artifact store" in checks["artifact_store"]
    # Reads that need only the database carry on.
    assert s3_down_registry.api.get("/models").status_code == 200


# --- database unreachable -------------------------------------------------------------------


@pytest.fixture(scope="module", params=["closed-port", "silent-server"])
def db_down_registry(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningRegistry]:
    """A registry whose Postgres is unreachable: nothing listening, or a server that hangs.

    Shared by the module's tests (every request fails the same way), since each start and stop
    against a hanging server waits out a connect timeout.
    """
    if request.param == "closed-port":
        port = free_port()
    else:
        port = request.getfixturevalue("silent_server")
    tmp_path = tmp_path_factory.mktemp(request.param)
    backend = Backend(
        request.param,
        f"postgresql+psycopg://postgres@127.0.0.1:{port}/berth",
        (tmp_path / "artifacts").as_uri(),
    )
    yield from run_registry(make_settings(backend, tmp_path, db_timeout_seconds=2.0))


DB_REQUESTS: dict[str, Callable[[httpx.Client], httpx.Response]] = {
    "list models": lambda api: api.get("/models"),
    "get model": lambda api: api.get("/models/churn"),
    "create model": lambda api: api.post("/models", json={"name": "churn"}),
    "promote": lambda api: api.put("/models/churn/aliases/production", json={"version": 1}),
    "changes": lambda api: api.get("/changes", params={"after": 0}),
    "upload": lambda api: upload(api, "churn", random_bytes(PART + 123)),
}


@pytest.mark.parametrize("request_name", list(DB_REQUESTS))
def test_database_unreachable_is_503_within_seconds(
    db_down_registry: RunningRegistry, request_name: str
) -> None:
    response, elapsed = timed(lambda: DB_REQUESTS[request_name](db_down_registry.api))

    body = assert_error_body(response, 503, "database_unavailable")
    assert "database" in str(body["message"])
    assert elapsed < FAIL_FAST, f"{request_name} took {elapsed:.1f} s"


def test_database_unreachable_upload_leaves_nothing_in_the_store(
    db_down_registry: RunningRegistry,
) -> None:
    response = upload(db_down_registry.api, "churn", random_bytes(PART + 123))

    assert_error_body(response, 503, "database_unavailable")
    # The bytes were streamed into the store before the claim failed; they must not stay.
    assert raw_objects(db_down_registry.store) == {}


# --- the registry killed mid-upload ---------------------------------------------------------


def bytes_in_flight(store: ArtifactStore) -> int:
    """How many bytes of unfinished uploads have reached the store."""
    if isinstance(store, FileStore):
        return sum(size for key, size in raw_objects(store).items() if key.startswith("uploads/"))
    assert isinstance(store, S3Store)
    client = raw_client()
    total = 0
    for mpu in client.list_multipart_uploads(Bucket=store.bucket, Prefix=store.prefix).get(
        "Uploads", []
    ):
        parts = client.list_parts(Bucket=store.bucket, Key=mpu["Key"], UploadId=mpu["UploadId"])
        total += sum(part["Size"] for part in parts.get("Parts", []))
    return total


class SlowUpload:
    """A multipart/form-data upload streamed from a thread in 1 MiB steps, never finishing."""

    BOUNDARY = "berth-kill-test"

    def __init__(self, url: str) -> None:
        self.url = url
        self.sent = 0
        self.stop = threading.Event()
        self.outcome: httpx.Response | Exception | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _body(self) -> Iterator[bytes]:
        yield (
            f"--{self.BOUNDARY}\r\n"
            'Content-Disposition: form-data; name="artifact"; filename="model.bin"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        chunk = random_bytes(MiB)
        while not self.stop.is_set() and self.sent < 512 * MiB:
            yield chunk
            self.sent += len(chunk)
            time.sleep(0.02)

    def _run(self) -> None:
        try:
            with httpx.Client(timeout=60) as client:
                self.outcome = client.post(
                    self.url,
                    content=self._body(),
                    headers={"Content-Type": f"multipart/form-data; boundary={self.BOUNDARY}"},
                )
        except Exception as exc:  # the server dying under us is the point
            self.outcome = exc

    def __enter__(self) -> SlowUpload:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self._thread.join(timeout=30)


def registry_env(backend: Backend) -> dict[str, str]:
    return {
        "BERTH_DATABASE_URL": backend.database_url,
        "BERTH_ARTIFACT_STORE": backend.store_url,
        "BERTH_AUTH": "false",
        "BERTH_UPLOAD_PART_BYTES": str(PART),
    }


def assert_every_row_has_its_object(database: Database, store: ArtifactStore) -> set[str]:
    referenced = referenced_digests(database)
    missing = {digest for digest in referenced if not store.exists(digest)}
    assert missing == set(), f"version rows reference objects the store lacks: {missing}"
    return referenced


def test_sigkill_mid_upload_leaves_no_row_without_object_and_gc_removes_the_orphan(
    backend: Backend, tmp_path: Path
) -> None:
    store = open_store(backend.store_url)
    database = Database(backend.database_url)
    kept = [random_bytes(3000), random_bytes(PART + 7)]
    service = ServiceProcess(
        ["registry", "serve"], env=registry_env(backend), log_path=tmp_path / "registry.log"
    )
    try:
        with service, httpx.Client(base_url=service.url + "/api/v1", timeout=60) as api:
            for data in kept:
                upload_ok(api, "churn", data)

            with SlowUpload(service.url + "/api/v1/models/churn/versions") as slow:
                # Kill only once whole parts of the artifact are really in the store.
                eventually(
                    lambda: bytes_in_flight(store) >= PART,
                    within=60,
                    every=0.05,
                    what="the upload's first part to reach the store",
                )
                assert slow.outcome is None, f"the upload ended early: {slow.outcome!r}"
                service.kill()
            assert isinstance(slow.outcome, httpx.TransportError), slow.outcome
            assert slow.sent >= PART

        # The crash left exactly what it must: the finished versions, each with its object, and
        # an orphaned partial upload no row references.
        assert version_count(database) == 2
        referenced = assert_every_row_has_its_object(database, store)
        assert referenced == {sha256(data) for data in kept}
        assert any(leftovers(store)), "the kill left no partial upload behind to collect"

        report = collect_garbage(database, store, grace_seconds=0)

        assert report.aborted_uploads >= 1
        assert report.deleted_blobs == 0
        assert report.kept_referenced == 2
        assert leftovers(store) == (set(), [])
        assert blob_keys(store) == referenced
        assert_every_row_has_its_object(database, store)

        # And the registry comes back on the same state and carries on numbering.
        with service, httpx.Client(base_url=service.url + "/api/v1", timeout=60) as api:
            assert upload_ok(api, "churn", random_bytes(100))["version"] == 3
            response = api.get("/models/churn/versions/2/artifact", follow_redirects=True)
            assert response.content == kept[1]
    finally:
        service.kill()
        database.dispose()


def test_crash_between_publish_and_version_row_is_collected_after_grace(
    backend: Backend, tmp_path: Path
) -> None:
    settings: RegistrySettings = make_settings(backend, tmp_path)
    with contextmanager(run_registry)(settings) as registry:
        kept = random_bytes(2000)
        upload_ok(registry.api, "churn", kept)
        # What an upload does before its version row: claim the digest, then publish the object.
        # The process dies here, so the row never comes.
        orphan_data = random_bytes(4096)
        staged = registry.store.begin_upload()
        staged.write(orphan_data)
        orphan = staged.finish().sha256
        with registry.db.transaction() as session:
            repo.claim_blob(session, orphan, len(orphan_data))
        staged.publish()
        unrecorded = random_bytes(512)  # a crash of an older version that claimed nothing
        staged = registry.store.begin_upload()
        staged.write(unrecorded)
        unrecorded_digest = staged.finish().sha256
        staged.publish()

        long_grace = collect_garbage(registry.db, registry.store, grace_seconds=3600)
        assert long_grace.deleted_blobs == 0
        assert blob_keys(registry.store) == {sha256(kept), orphan, unrecorded_digest}

        time.sleep(0.05)  # so the claim is strictly older than a zero grace period's cutoff
        report = collect_garbage(registry.db, registry.store, grace_seconds=0)

        assert report.deleted_blobs == 2
        assert report.freed_bytes == 4096 + 512
        assert blob_keys(registry.store) == {sha256(kept)}
        assert_every_row_has_its_object(registry.db, registry.store)
        response = registry.api.get("/models/churn/versions/1/artifact", follow_redirects=True)
        assert response.content == kept
