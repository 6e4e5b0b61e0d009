"""Fixtures for serving: an in-process fake registry and a serving app wired to it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx
import pytest

from serving.config import ServingSettings
from serving.main import Runtime, create_app
from tests.fixtures.servers import LiveServer
from tests.fixtures.waiting import eventually as eventually  # the serving tests' import
from tests.serving.factories import artifact, metadata, regressor
from tests.serving.fakes import FakeRegistry

T = TypeVar("T")


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


def _two_versions(fake: FakeRegistry) -> FakeRegistry:
    """churn v1 predicts sum(x) + 1, v2 predicts sum(x) + 2; production → v1."""
    for offset in (1, 2):
        estimator = regressor(offset=offset)
        fake.add_version("churn", artifact(estimator), metadata(estimator))
    fake.set_alias("churn", "production", 1)
    return fake


# One registry state under the two names the serving tests read it by.
two_versions = pytest.fixture(_two_versions, name="two_versions")
churn = pytest.fixture(_two_versions, name="churn")


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
