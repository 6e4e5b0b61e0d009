"""Garbage collection: what it deletes, what it must never delete, and what it reports.

Every test runs on Postgres + S3 (moto over HTTP) and on SQLite + a directory. "Old" means older
than the grace period by the store's own clock: a directory's files are backdated (their mtime is
their age); S3 objects cannot be backdated, so those tests wait the grace period out for real.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from registry import repository as repo
from registry.db import Database
from registry.models import Blob
from registry.schemas import GcReport
from registry.service import collect_garbage
from registry.storage import ArtifactStore, FileStore, open_store
from tests.conftest import Backend, RunningRegistry
from tests.fixtures.factories import random_bytes, sha256, upload_ok
from tests.fixtures.servers import REPO_ROOT, free_port
from tests.fixtures.storage_state import blob_keys, leftovers, raw_objects, referenced_digests

GRACE = 4.0
"""Seconds. Long enough that an S3 object made just before gc (LastModified is truncated to the
second) still counts as young, short enough to wait out."""


def put(store: ArtifactStore, data: bytes) -> str:
    """Publish straight into the store, as an upload that crashed before its row would."""
    upload = store.begin_upload()
    upload.write(data)
    digest = upload.finish().sha256
    upload.publish()
    return digest


def abandon(store: ArtifactStore, size: int = 1000) -> None:
    """Leave a finished but never published temporary object, as a killed upload would."""
    upload = store.begin_upload()
    upload.write(random_bytes(size))
    upload.finish()


def age_everything(store: ArtifactStore, seconds: float) -> None:
    """Make everything in the store at least `seconds` older than the grace cutoff will be."""
    if isinstance(store, FileStore):
        then = time.time() - seconds - 60
        for path in store.root.rglob("*"):
            if path.is_file():
                os.utime(path, (then, then))
    else:
        time.sleep(seconds + 0.5)


def blob_rows(database: Database) -> set[str]:
    with database.transaction(write=False) as session:
        return set(session.scalars(select(Blob.sha256)).all())


def download(api: httpx.Client, model: str, version: int) -> bytes:
    response = api.get(f"/models/{model}/versions/{version}/artifact", follow_redirects=True)
    assert response.status_code == 200, response.text
    return response.content


def gc(registry: RunningRegistry, *, grace: float, dry_run: bool = False) -> GcReport:
    return collect_garbage(registry.db, registry.store, grace_seconds=grace, dry_run=dry_run)


def test_referenced_objects_are_kept_however_old(registry: RunningRegistry) -> None:
    one, two, onnx = random_bytes(2000), random_bytes(3000), random_bytes(500)
    upload_ok(registry.api, "churn", one)
    upload_ok(registry.api, "churn", two, extra_files={"onnx": onnx})
    upload_ok(registry.api, "fraud", one)  # the same bytes again: one object, two versions
    age_everything(registry.store, 0)

    report = gc(registry, grace=0)

    assert report == GcReport(
        deleted_blobs=0, freed_bytes=0, aborted_uploads=0, kept_referenced=3, kept_young=0
    )
    assert blob_keys(registry.store) == {sha256(one), sha256(two), sha256(onnx)}
    assert download(registry.api, "churn", 1) == one
    assert download(registry.api, "churn", 2) == two
    assert download(registry.api, "fraud", 1) == one


def test_unreferenced_objects_older_than_grace_are_deleted(registry: RunningRegistry) -> None:
    kept = random_bytes(1000)
    upload_ok(registry.api, "churn", kept)
    orphans = [random_bytes(1234), random_bytes(4321)]
    digests = [put(registry.store, data) for data in orphans]
    age_everything(registry.store, 0)

    report = gc(registry, grace=0)

    assert report.deleted_blobs == 2
    assert report.freed_bytes == 1234 + 4321
    assert report.kept_referenced == 1
    assert blob_keys(registry.store) == {sha256(kept)}
    for digest in digests:
        assert not registry.store.exists(digest)
    # The rows gc made to lock the orphans go with them; the referenced one stays.
    assert blob_rows(registry.db) == {sha256(kept)}


def test_unreferenced_objects_younger_than_grace_are_kept(registry: RunningRegistry) -> None:
    data = random_bytes(2048)
    digest = put(registry.store, data)
    abandon(registry.store)

    report = gc(registry, grace=3600)

    assert report == GcReport(
        deleted_blobs=0, freed_bytes=0, aborted_uploads=0, kept_referenced=0, kept_young=1
    )
    assert b"".join(registry.store.iter_bytes(digest)) == data
    assert len(leftovers(registry.store)[0]) == 1, "a young abandoned upload was removed"


def test_an_old_object_claimed_by_an_upload_in_flight_is_kept(registry: RunningRegistry) -> None:
    claimed_data, control_data = random_bytes(1500), random_bytes(1600)
    claimed = put(registry.store, claimed_data)
    control = put(registry.store, control_data)
    age_everything(registry.store, GRACE)
    # An upload of the same bytes has just claimed the digest and is about to publish and write
    # its version row: the object is old, but deleting it now would leave that row without it.
    with registry.db.transaction() as session:
        repo.claim_blob(session, claimed, len(claimed_data))

    report = gc(registry, grace=GRACE)

    assert report.deleted_blobs == 1, "the unclaimed control object should have gone"
    assert report.kept_young == 1
    assert registry.store.exists(claimed)
    assert not registry.store.exists(control)
    assert blob_rows(registry.db) == {claimed}

    # Once the claim is older than the grace period too, nothing protects it any more.
    age_everything(registry.store, 0)
    time.sleep(0.2)
    report = gc(registry, grace=0.1)
    assert report.deleted_blobs == 1
    assert not registry.store.exists(claimed)


@dataclass(frozen=True)
class Scenario:
    expected: GcReport
    deleted: set[str]
    survivors: set[str]


@pytest.fixture
def mixed_store(registry: RunningRegistry) -> Scenario:
    """Every kind of thing gc meets, with the exact report it should produce at GRACE."""
    store, api = registry.store, registry.api
    shared = random_bytes(700)
    upload_ok(api, "churn", shared)
    upload_ok(api, "churn", shared)  # two versions, one object
    upload_ok(api, "fraud", random_bytes(800), extra_files={"onnx": random_bytes(90)})
    old_orphans = [random_bytes(1001), random_bytes(2002), random_bytes(3003)]
    old_digests = [put(store, data) for data in old_orphans]
    claimed = put(store, random_bytes(404))
    abandon(store)
    abandon(store)
    age_everything(store, GRACE)
    young = put(store, random_bytes(505))
    abandon(store)  # young: an upload still finishing
    with registry.db.transaction() as session:
        repo.claim_blob(session, claimed, 404)
    return Scenario(
        expected=GcReport(
            deleted_blobs=3,
            freed_bytes=1001 + 2002 + 3003,
            aborted_uploads=2,
            kept_referenced=3,
            kept_young=2,
        ),
        deleted=set(old_digests),
        survivors=referenced_digests(registry.db) | {claimed, young},
    )


def test_the_report_counts_are_exact(registry: RunningRegistry, mixed_store: Scenario) -> None:
    report = gc(registry, grace=GRACE)

    assert report == mixed_store.expected
    assert blob_keys(registry.store) == mixed_store.survivors
    assert not mixed_store.deleted & blob_rows(registry.db)
    temporary, multipart = leftovers(registry.store)
    assert len(temporary) == 1, "only the young abandoned upload may remain"
    assert multipart == []

    # Collecting again finds nothing more to do.
    again = gc(registry, grace=GRACE)
    assert (again.deleted_blobs, again.freed_bytes, again.aborted_uploads) == (0, 0, 0)


def test_a_dry_run_deletes_nothing_but_reports_what_it_would(
    registry: RunningRegistry, mixed_store: Scenario
) -> None:
    before = raw_objects(registry.store)
    rows_before = blob_rows(registry.db)

    report = gc(registry, grace=GRACE, dry_run=True)

    assert report == mixed_store.expected
    assert raw_objects(registry.store) == before
    assert blob_rows(registry.db) >= rows_before
    # And it told the truth: the real run does exactly what the dry run said.
    assert gc(registry, grace=GRACE) == report
    assert blob_keys(registry.store) == mixed_store.survivors


def test_version_downloads_survive_collection(registry: RunningRegistry) -> None:
    data = random_bytes(5000)
    upload_ok(registry.api, "churn", data)
    put(registry.store, random_bytes(10))
    age_everything(registry.store, 0)

    gc(registry, grace=0)

    assert download(registry.api, "churn", 1) == data
    assert blob_keys(registry.store) == referenced_digests(registry.db)


# --- the command ----------------------------------------------------------------------------


def run_gc_command(backend: Backend, *args: str, grace: float) -> subprocess.CompletedProcess[str]:
    env = os.environ | {
        "BERTH_DATABASE_URL": backend.database_url,
        "BERTH_ARTIFACT_STORE": backend.store_url,
        "BERTH_GC_GRACE_SECONDS": str(grace),
    }
    return subprocess.run(
        [sys.executable, "-m", "registry", "gc", *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_gc_command_collects_end_to_end(backend: Backend, tmp_path: Path) -> None:
    database = Database(backend.database_url)
    store = open_store(backend.store_url)
    try:
        orphan = put(store, random_bytes(4096))
        abandon(store)
        young_orphan = put(store, random_bytes(10))
        age_everything(store, 0)

        dry = run_gc_command(backend, "--dry-run", grace=0)
        assert dry.returncode == 0, dry.stderr
        dry_report = GcReport.model_validate(json.loads(dry.stdout.strip().splitlines()[-1]))
        assert dry_report.deleted_blobs == 2
        assert dry_report.aborted_uploads == 1
        assert store.exists(orphan)
        assert store.exists(young_orphan)

        # With the default-sized grace nothing this fresh is touched.
        kept = run_gc_command(backend, grace=3600)
        assert kept.returncode == 0, kept.stderr
        assert json.loads(kept.stdout.strip().splitlines()[-1])["deleted_blobs"] == 0
        assert store.exists(orphan)

        done = run_gc_command(backend, grace=0)
        assert done.returncode == 0, done.stderr
        report = GcReport.model_validate(json.loads(done.stdout.strip().splitlines()[-1]))
        assert report == GcReport(
            deleted_blobs=2,
            freed_bytes=4096 + 10,
            aborted_uploads=1,
            kept_referenced=0,
            kept_young=0,
        )
        assert raw_objects(store) == {}
        assert blob_rows(database) == set()
    finally:
        database.dispose()


def test_the_gc_command_fails_cleanly_when_the_database_is_unreachable(
    tmp_path: Path,
) -> None:
    backend = Backend(
        "unreachable",
        f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nowhere",
        (tmp_path / "artifacts").as_uri(),
    )
    store = open_store(backend.store_url)
    put(store, b"must survive")
    age_everything(store, 0)

    started = time.monotonic()
    result = run_gc_command(backend, grace=0)

    assert time.monotonic() - started < 30
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: the database is unavailable")
    assert "Traceback" not in result.stderr
    assert store.exists(sha256(b"must survive"))
