"""Fixtures for serving: an in-process fake registry and a serving app wired to it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx
import pytest

from serving.config import ServingSettings
from serving.main import Runtime, create_app
from tests.fixtures.servers import LiveServer
from tests.serving.fakes import FakeRegistry

T = TypeVar("T")


def eventually(probe: Callable[[], T | None], *, within: float = 10.0, every: float = 0.02) -> T:
    """Poll until `probe` returns something truthy; fail with the last value past the deadline."""
    deadline = time.monotonic() + within
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"condition not met within {within} s (last: {last!r})")


def serving_settings(**overrides: Any) -> ServingSettings:
    values: dict[str, Any] = {
        "registry_url": "http://registry.test",
        "replica_id": "replica-a",
        "feed_wait_seconds": 1,
        "heartbeat_seconds": 0.5,
        "backoff_min_seconds": 0.05,
        "backoff_max_seconds": 0.2,
        "serving_max_models": 4,
        # Authentication and isolated loading are tested in tests/security; here the fake
        # registry vouches for nobody, and a child process per load would only add seconds.
        "auth": False,
        "load_isolation": False,
    }
    return ServingSettings(**(values | overrides))


@pytest.fixture
def fake() -> FakeRegistry:
    return FakeRegistry()


class ServingClient(httpx.Client):
    """A client of one running serving app, with a handle on its in-memory state."""

    runtime: Runtime


@pytest.fixture
def start_serving(fake: FakeRegistry) -> Iterator[Callable[..., ServingClient]]:
    """Serve an app over real HTTP (uvicorn in a thread) against the fake registry in-process.

    Stopped, lifespan and all, at teardown.
    """
    started: list[tuple[LiveServer, ServingClient]] = []

    def start(**overrides: Any) -> ServingClient:
        app = create_app(serving_settings(**overrides), transport=httpx.ASGITransport(fake.app))
        server = LiveServer(app).__enter__()
        client = ServingClient(base_url=server.url, timeout=30)
        client.runtime = app.state.runtime
        started.append((server, client))
        return client

    yield start
    for server, client in started:
        client.close()
        server.__exit__(None, None, None)
