"""Versions: streaming upload, metadata, digests, limits, renditions, downloads, archive."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from registry.config import RegistrySettings
from registry.service import RegistryService
from tests.conftest import Backend, RunningRegistry, make_settings, run_registry
from tests.fixtures.factories import (
    example_for,
    joblib_bytes,
    linear_model,
    promote,
    random_bytes,
    sha256,
    signature_for,
    upload,
    upload_ok,
)
from tests.registry.test_models_api import assert_error


def version_rows(registry: RunningRegistry) -> int:
    with registry.db.engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT count(*) FROM model_versions").scalar_one())


def test_upload_records_every_metadata_field(api: httpx.Client) -> None:
    model = linear_model(n_features=3)
    data = joblib_bytes(model)
    metadata = {
        "flavor": "sklearn",
        "signature": signature_for(3),
        "example": example_for(model, 3),
        "metrics": {"rmse": 0.25},
        "params": {"alpha": 0.1, "fit_intercept": True, "solver": "auto"},
        "tags": {"team": "growth"},
        "description": "first cut",
        "lineage": {
            "git_sha": "0123abcd",
            "dataset": "sha256:feedbeef",
            "run_url": "https://ci.example/run/7",
            "environment": {"python": "3.11.7", "scikit-learn": "1.9.1"},
        },
        "sha256": sha256(data),
    }
    version = upload_ok(api, "churn", data, metadata=metadata)
    assert version["version"] == 1
    assert version["size"] == len(data)
    for key in ("flavor", "metrics", "params", "tags", "description"):
        assert version[key] == metadata[key]
    assert version["signature"]["inputs"][2] == {"name": "f2", "dtype": "float64"}
    assert version["example"]["outputs"]["predict"] == metadata["example"]["outputs"]["predict"]
    assert version["lineage"]["environment"]["scikit-learn"] == "1.9.1"
    assert version["files"] == [
        {
            "name": "artifact",
            "sha256": sha256(data),
            "size": len(data),
            "media_type": "application/octet-stream",
        }
    ]
    assert api.get("/models/churn/versions/1").json() == version


def test_metadata_may_come_after_the_artifact(api: httpx.Client) -> None:
    data = random_bytes(2000)
    boundary = "berth-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="artifact"; filename="m.bin"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + (
            f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="metadata"\r\n\r\n'
            '{"tags": {"order": "late"}}'
            f"\r\n--{boundary}--\r\n"
        ).encode()
    )
    response = api.post(
        "/models/late/versions",
        content=body,
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert response.status_code == 201, response.text
    assert response.json()["tags"] == {"order": "late"}
    assert response.json()["sha256"] == sha256(data)


def test_version_numbers_count_up_per_model(api: httpx.Client) -> None:
    assert [upload_ok(api, "a")["version"] for _ in range(3)] == [1, 2, 3]
    assert upload_ok(api, "b")["version"] == 1


def test_identical_bytes_are_stored_once(registry: RunningRegistry) -> None:
    data = random_bytes(50_000)
    upload_ok(registry.api, "a", data)
    upload_ok(registry.api, "b", data)
    blobs = list(registry.store.list_blobs())
    assert [b.sha256 for b in blobs] == [sha256(data)]


def test_a_wrong_declared_digest_is_refused_and_nothing_is_registered(
    registry: RunningRegistry,
) -> None:
    response = upload(registry.api, "churn", random_bytes(), metadata={"sha256": "0" * 64})
    body = assert_error(response, 422, "digest_mismatch")
    assert "0" * 64 in str(body["message"])
    assert version_rows(registry) == 0
    assert list(registry.store.list_blobs()) == []
    assert list(registry.store.list_pending()) == []


@pytest.mark.parametrize(
    ("metadata", "needle"),
    [
        ({"metrics": {"auc": "high"}}, "metrics.auc"),
        ({"flavor": "../../etc"}, "flavor"),
        ({"signature": {"inputs": []}}, "signature.inputs"),
        ({"example": {"inputs": [[1, 2]], "outputs": {"predict": [1, 2]}}}, "example"),
        ({"unknown": 1}, "unknown"),
        ({"sha256": "xyz"}, "sha256"),
    ],
)
def test_invalid_metadata_is_a_422_naming_the_field(
    registry: RunningRegistry, metadata: dict[str, object], needle: str
) -> None:
    body = assert_error(upload(registry.api, "churn", metadata=metadata), 422, "invalid_input")
    assert needle in str(body["message"])
    assert version_rows(registry) == 0


def test_metadata_that_is_not_json_is_a_422(api: httpx.Client) -> None:
    response = api.post(
        "/models/churn/versions",
        files={"artifact": ("m", b"x")},
        data={"metadata": "{nope"},
    )
    assert_error(response, 422, "invalid_input")


def test_an_upload_without_an_artifact_part_is_a_422(api: httpx.Client) -> None:
    response = api.post("/models/churn/versions", files={"onnx": ("m.onnx", b"x")})
    body = assert_error(response, 422, "invalid_input")
    assert "'artifact'" in str(body["message"])


def test_a_non_multipart_upload_is_a_415(api: httpx.Client) -> None:
    response = api.post(
        "/models/churn/versions",
        content=b"raw",
        headers={"content-type": "application/octet-stream"},
    )
    assert_error(response, 415, "unsupported_media_type")


def test_a_truncated_multipart_body_is_a_400_and_leaves_nothing(registry: RunningRegistry) -> None:
    body = (
        b'--b\r\nContent-Disposition: form-data; name="artifact"; filename="m"\r\n\r\n'
        + random_bytes(1000)
    )
    response = registry.api.post(
        "/models/churn/versions",
        content=body,
        headers={"content-type": "multipart/form-data; boundary=b"},
    )
    assert_error(response, 400, "bad_request")
    assert version_rows(registry) == 0
    assert list(registry.store.list_pending()) == []


@pytest.mark.parametrize("part", ["../etc", "Artifact", "a" * 40, "on nx"])
def test_file_part_names_are_validated(api: httpx.Client, part: str) -> None:
    response = api.post(
        "/models/churn/versions",
        files=[("artifact", ("m", b"x")), (part, ("m", b"y"))],
    )
    assert_error(response, 422, "invalid_input")


@pytest.fixture
def small_limit_registry(backend: Backend, tmp_path: Path) -> Iterator[RunningRegistry]:
    yield from run_registry(make_settings(backend, tmp_path, max_artifact_bytes=100_000))


def test_an_upload_past_the_limit_is_a_413_and_leaves_nothing(
    small_limit_registry: RunningRegistry,
) -> None:
    registry = small_limit_registry
    # Streamed with no Content-Length, so the server must count as it reads.
    chunks = (random_bytes(16_384) for _ in range(20))

    def body() -> Iterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="artifact"; filename="m"\r\n\r\n'
        yield from chunks
        yield b"\r\n--b--\r\n"

    response = registry.api.post(
        "/models/churn/versions",
        content=body(),
        headers={"content-type": "multipart/form-data; boundary=b"},
    )
    body_json = assert_error(response, 413, "payload_too_large")
    assert "BERTH_MAX_ARTIFACT_BYTES" in str(body_json["message"])
    assert version_rows(registry) == 0
    assert list(registry.store.list_pending()) == []
    assert list(registry.store.list_blobs()) == []


def test_a_declared_length_past_the_limit_is_refused_before_reading(
    small_limit_registry: RunningRegistry,
) -> None:
    response = upload(small_limit_registry.api, "churn", random_bytes(300_000))
    assert_error(response, 413, "payload_too_large")


def test_renditions_are_stored_hashed_and_listed(registry: RunningRegistry) -> None:
    primary, onnx = random_bytes(3000), random_bytes(2000)
    version = upload_ok(registry.api, "churn", primary, extra_files={"onnx": onnx})
    files = {f["name"]: f for f in version["files"]}
    assert files["artifact"]["sha256"] == sha256(primary)
    assert files["onnx"]["sha256"] == sha256(onnx)
    assert files["onnx"]["size"] == len(onnx)
    got = registry.api.get("/models/churn/versions/1/files/onnx", follow_redirects=True)
    assert got.content == onnx
    assert_error(registry.api.get("/models/churn/versions/1/files/tflite"), 404, "file_not_found")


def test_artifact_download_streams_or_redirects_to_a_presigned_url(
    registry: RunningRegistry, backend: Backend
) -> None:
    data = random_bytes(70_000)
    upload_ok(registry.api, "churn", data)
    response = registry.api.get("/models/churn/versions/1/artifact")
    assert response.headers["x-berth-sha256"] == sha256(data)
    if backend.is_postgres:  # S3: a short-lived presigned URL on the store itself
        assert response.status_code == 307
        location = response.headers["location"]
        assert "X-Amz-Signature" in location
        assert "X-Amz-Expires=300" in location
        assert httpx.get(location).content == data
    else:
        assert response.status_code == 200
        assert response.content == data


def test_artifact_can_be_streamed_through_the_registry_on_s3(
    postgres_backend: Backend, tmp_path: Path
) -> None:
    settings = make_settings(postgres_backend, tmp_path, artifact_redirect=False)
    for registry in run_registry(settings):
        data = random_bytes(3 * 1024 * 1024 + 17)
        upload_ok(registry.api, "churn", data)
        response = registry.api.get("/models/churn/versions/1/artifact")
        assert response.status_code == 200
        assert response.content == data
        assert response.headers["content-length"] == str(len(data))


def test_unknown_version_is_404_naming_model_and_version(api: httpx.Client) -> None:
    upload_ok(api, "churn")
    body = assert_error(api.get("/models/churn/versions/7"), 404, "version_not_found")
    assert body["message"] == "model 'churn' has no version 7"
    assert_error(api.get("/models/churn/versions/0"), 422, "invalid_request")
    assert_error(api.get("/models/churn/versions/abc"), 422, "invalid_request")


def test_versions_list_newest_first_with_pagination(api: httpx.Client) -> None:
    for _ in range(5):
        upload_ok(api, "churn")
    first = api.get("/models/churn/versions", params={"limit": 2}).json()
    assert [v["version"] for v in first["items"]] == [5, 4]
    second = api.get(
        "/models/churn/versions", params={"limit": 2, "cursor": first["next_cursor"]}
    ).json()
    assert [v["version"] for v in second["items"]] == [3, 2]
    third = api.get(
        "/models/churn/versions", params={"limit": 2, "cursor": second["next_cursor"]}
    ).json()
    assert [v["version"] for v in third["items"]] == [1]
    assert third["next_cursor"] is None


def test_patch_changes_description_and_tags_only(api: httpx.Client) -> None:
    original = upload_ok(api, "churn", metadata={"metrics": {"auc": 0.8}})
    patched = api.patch(
        "/models/churn/versions/1", json={"description": "better", "tags": {"k": "v"}}
    ).json()
    assert patched["description"] == "better"
    assert patched["tags"] == {"k": "v"}
    assert patched["sha256"] == original["sha256"]
    assert patched["metrics"] == {"auc": 0.8}
    # Immutable fields cannot be patched.
    assert_error(
        api.patch("/models/churn/versions/1", json={"sha256": "0" * 64}), 422, "invalid_request"
    )


def test_archive_is_refused_while_an_alias_uses_the_version(api: httpx.Client) -> None:
    upload_ok(api, "churn")
    upload_ok(api, "churn")
    assert promote(api, "churn", 1).status_code == 200
    body = assert_error(api.post("/models/churn/versions/1/archive"), 409, "version_in_use")
    assert "'production'" in str(body["message"])

    assert promote(api, "churn", 2).status_code == 200
    archived = api.post("/models/churn/versions/1/archive")
    assert archived.status_code == 200
    assert archived.json()["status"] == "archived"
    assert archived.json()["archived_at"] is not None
    # Still readable, no longer routable.
    assert api.get("/models/churn/versions/1/artifact", follow_redirects=True).status_code == 200
    assert_error(promote(api, "churn", 1), 422, "version_archived")
    statuses = [
        v["status"]
        for v in api.get("/models/churn/versions", params={"status": "archived"}).json()["items"]
    ]
    assert statuses == ["archived"]


def test_version_record_round_trips_through_json(api: httpx.Client) -> None:
    version = upload_ok(api, "churn")
    assert json.loads(json.dumps(version)) == api.get("/models/churn/versions/1").json()


def test_settings_default_to_the_embedded_stores(tmp_path: Path) -> None:
    settings = RegistrySettings(data_dir=tmp_path)
    assert settings.effective_database_url == f"sqlite:///{tmp_path.resolve()}/berth.db"
    assert settings.effective_artifact_store == (tmp_path / "artifacts").resolve().as_uri()


def test_a_declared_digest_before_the_artifact_is_checked_and_stored_once(
    registry: RunningRegistry,
) -> None:
    data = random_bytes(6 * 1024 * 1024)  # past one part, so S3 goes multipart
    ok = upload(registry.api, "churn", data, metadata={"sha256": sha256(data)})
    assert ok.status_code == 201, ok.text
    wrong = upload(
        registry.api, "churn", random_bytes(6 * 1024 * 1024), metadata={"sha256": "a" * 64}
    )
    assert_error(wrong, 422, "digest_mismatch")
    assert [b.sha256 for b in registry.store.list_blobs()] == [sha256(data)]
    assert list(registry.store.list_pending()) == []
    assert version_rows(registry) == 1


def test_bad_metadata_before_the_artifact_fails_without_storing_it(
    registry: RunningRegistry,
) -> None:
    response = upload(
        registry.api, "churn", random_bytes(6 * 1024 * 1024), metadata={"metrics": "x"}
    )
    assert_error(response, 422, "invalid_input")
    assert list(registry.store.list_pending()) == []
    assert list(registry.store.list_blobs()) == []


def test_replicas_fetching_a_new_version_at_once_share_one_database_read(
    registry: RunningRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A promotion sends every replica for the version's record and bytes at the same moment;
    the registry's database work must not grow with the fleet."""
    data = random_bytes(4096)
    upload_ok(registry.api, "churn", data)
    reads: list[int] = []
    original = RegistryService.get_version

    def slow_counting(self: RegistryService, name: str, number: int) -> Any:
        reads.append(number)
        time.sleep(0.5)  # every request below arrives while this read is in flight
        return original(self, name, number)

    monkeypatch.setattr(RegistryService, "get_version", slow_counting)
    count = 16
    barrier = threading.Barrier(count)

    def fetch(i: int) -> httpx.Response:
        barrier.wait()
        path = "/models/churn/versions/1" + ("/artifact" if i % 2 else "")
        return registry.api.get(path, follow_redirects=True)

    with ThreadPoolExecutor(count) as workers:
        responses = list(workers.map(fetch, range(count)))
    assert [r.status_code for r in responses] == [200] * count
    assert all(r.json()["sha256"] == sha256(data) for r in responses[::2])
    assert all(r.content == data for r in responses[1::2])
    assert len(reads) <= 2, f"{len(reads)} database reads for {count} requests"
    # A read that finished is never reused: the next request reads afresh.
    assert registry.api.get("/models/churn/versions/1").status_code == 200
    assert len(reads) <= 3
    assert_error(registry.api.get("/models/churn/versions/1/files/onnx"), 404, "file_not_found")
