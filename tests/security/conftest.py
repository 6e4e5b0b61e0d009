"""A registry and a serving replica wired together over real HTTP, with tokens to call them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from registry import auth
from registry.schemas import Role, TokenCreate
from serving.config import ServingSettings
from serving.main import create_app as create_serving
from tests.conftest import Backend, RunningRegistry, make_settings, run_registry
from tests.fixtures.servers import LiveServer


@pytest.fixture
def sqlite_backend(sqlite_url: str, tmp_path: Path) -> Backend:
    return Backend("sqlite+file", sqlite_url, (tmp_path / "artifacts").as_uri())


@pytest.fixture
def secured_registry(sqlite_backend: Backend, tmp_path: Path) -> Iterator[RunningRegistry]:
    yield from run_registry(make_settings(sqlite_backend, tmp_path, auth=True))


def make_token(
    registry: RunningRegistry,
    role: Role,
    *,
    name: str | None = None,
    models: list[str] | None = None,
) -> tuple[int, str]:
    with registry.db.transaction() as session:
        row, secret = auth.create_token(
            session,
            TokenCreate(name=name or role.value, role=role, models=models),
            created_by="test",
        )
        return row.id, secret


@dataclass
class RunningServing:
    url: str
    app: Any

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


@pytest.fixture
def start_serving() -> Iterator[Callable[..., RunningServing]]:
    """Serving replicas over real HTTP against a real registry; stopped at teardown."""
    servers: list[LiveServer] = []

    def start(registry: RunningRegistry, **overrides: Any) -> RunningServing:
        values: dict[str, Any] = {
            "registry_url": registry.url,
            "replica_id": f"replica-{len(servers)}",
            "feed_wait_seconds": 1,
            "heartbeat_seconds": 0.5,
            "backoff_min_seconds": 0.05,
            "backoff_max_seconds": 0.3,
            "load_isolation": False,
        }
        app = create_serving(ServingSettings(**(values | overrides)))
        server = LiveServer(app).__enter__()
        servers.append(server)
        return RunningServing(server.url, app)

    yield start
    for server in servers:
        server.__exit__(None, None, None)
