"""Shared fixtures: real Postgres and SQLite, S3 over HTTP (moto), a live registry."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from registry.config import RegistrySettings
from registry.db import Database
from registry.main import create_app
from registry.storage import ArtifactStore
from tests.fixtures.servers import LiveServer

pytest_plugins = ["tests.fixtures.databases", "tests.fixtures.s3"]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # A suite that selected nothing proves nothing: make "no tests ran" fail loudly.
    if session.testscollected == 0 and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.NO_TESTS_COLLECTED


@dataclass(frozen=True)
class Backend:
    """Where metadata and artifacts live: production-shaped or embedded."""

    name: str
    database_url: str
    store_url: str

    @property
    def is_postgres(self) -> bool:
        return self.database_url.startswith("postgresql")


BACKENDS = ["postgres+s3", "sqlite+file"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "postgres+s3":
        return Backend(
            request.param,
            request.getfixturevalue("postgres_url"),
            request.getfixturevalue("s3_store_url"),
        )
    return Backend(
        request.param, request.getfixturevalue("sqlite_url"), (tmp_path / "artifacts").as_uri()
    )


@pytest.fixture
def postgres_backend(postgres_url: str, s3_store_url: str) -> Backend:
    return Backend("postgres+s3", postgres_url, s3_store_url)


def make_settings(backend: Backend, tmp_path: Path, **overrides: Any) -> RegistrySettings:
    values: dict[str, Any] = {
        "data_dir": tmp_path,
        "database_url": backend.database_url,
        "artifact_store": backend.store_url,
        "auth": False,
        "feed_poll_seconds": 0.2,
        "gc_grace_seconds": 3600,
    }
    return RegistrySettings(**(values | overrides))


@dataclass
class RunningRegistry:
    url: str
    app: FastAPI
    api: httpx.Client
    """A client for `/api/v1`."""
    _clients: list[httpx.Client] = field(default_factory=list)

    @property
    def db(self) -> Database:
        database: Database = self.app.state.db
        return database

    @property
    def store(self) -> ArtifactStore:
        store: ArtifactStore = self.app.state.store
        return store

    def client(self, token: str | None = None, **kwargs: Any) -> httpx.Client:
        """Another `/api/v1` client, closed with the registry."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        client = httpx.Client(base_url=self.url + "/api/v1", headers=headers, timeout=30, **kwargs)
        self._clients.append(client)
        return client


def run_registry(settings: RegistrySettings) -> Iterator[RunningRegistry]:
    app = create_app(settings)
    with (
        LiveServer(app) as server,
        httpx.Client(base_url=server.url + "/api/v1", timeout=30) as api,
    ):
        running = RunningRegistry(server.url, app, api)
        try:
            yield running
        finally:
            for client in running._clients:
                client.close()


@pytest.fixture
def registry_settings(backend: Backend, tmp_path: Path) -> RegistrySettings:
    return make_settings(backend, tmp_path)


@pytest.fixture
def registry(registry_settings: RegistrySettings) -> Iterator[RunningRegistry]:
    """A registry served over real HTTP, on each backend in turn."""
    yield from run_registry(registry_settings)


@pytest.fixture
def api(registry: RunningRegistry) -> httpx.Client:
    return registry.api
