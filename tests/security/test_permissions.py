"""Deny by default, on both apps: every route declares who may call it, or the suite fails."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.routing import Route

from registry import auth as registry_auth
from registry.config import RegistrySettings
from registry.main import create_app as create_registry
from serving import auth as serving_auth
from serving.auth import InsecureBinding, check_binding
from serving.config import ServingSettings
from serving.main import create_app as create_serving

DOCUMENTATION = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
"""FastAPI's own documentation routes: public by design, they describe the API and hold no data."""


def every_route(routes: list[Any]) -> Iterator[Any]:
    """All routes, including those inside included routers (FastAPI 0.165 wraps those)."""
    for route in routes:
        if (inner := getattr(route, "original_router", None)) is not None:
            yield from every_route(inner.routes)
        else:
            yield route


def _from_dependant(dependant: Dependant, attribute: str) -> set[str]:
    found = set()
    if (permission := getattr(dependant.call, attribute, None)) is not None:
        found.add(permission)
    for sub in dependant.dependencies:
        found |= _from_dependant(sub, attribute)
    return found


def permissions(route: Any, attribute: str) -> set[str]:
    if isinstance(route, APIRoute):
        return _from_dependant(route.dependant, attribute)
    if isinstance(route, Route) and (found := getattr(route.endpoint, attribute, None)):
        return {found}
    return set()


@pytest.fixture
def registry_app(tmp_path: Path) -> FastAPI:
    return create_registry(RegistrySettings(data_dir=tmp_path))


@pytest.fixture
def serving_app() -> FastAPI:
    return create_serving(ServingSettings(registry_url="http://registry.invalid"))


def undeclared(app: FastAPI, attribute: str) -> list[tuple[str, list[str]]]:
    out = []
    for route in every_route(app.routes):
        path = getattr(route, "path", repr(route))
        if path in DOCUMENTATION:
            continue
        if len(permissions(route, attribute)) != 1:
            out.append((path, sorted(permissions(route, attribute))))
    return out


def test_every_registry_route_declares_exactly_one_permission(registry_app: FastAPI) -> None:
    assert len(list(every_route(registry_app.routes))) > 25
    assert undeclared(registry_app, registry_auth.PERMISSION_ATTRIBUTE) == []


def test_every_serving_route_declares_exactly_one_permission(serving_app: FastAPI) -> None:
    routes = list(every_route(serving_app.routes))
    assert {"/models/{name}/predict", "/status", "/metrics"} <= {r.path for r in routes}
    assert undeclared(serving_app, serving_auth.PERMISSION_ATTRIBUTE) == []


def test_only_health_and_documentation_are_public(
    registry_app: FastAPI, serving_app: FastAPI
) -> None:
    public = []
    for app, attribute, marker in (
        (registry_app, registry_auth.PERMISSION_ATTRIBUTE, registry_auth.PUBLIC),
        (serving_app, serving_auth.PERMISSION_ATTRIBUTE, serving_auth.PUBLIC),
    ):
        for route in every_route(app.routes):
            if marker in permissions(route, attribute):
                public.append(route.path)
    assert sorted(public) == ["/healthz", "/healthz", "/readyz", "/readyz"]


def test_a_route_added_without_a_permission_is_caught(registry_app: FastAPI) -> None:
    """The walk itself can fail: an undeclared route shows up in it."""

    @registry_app.get("/api/v1/oops")
    def oops() -> dict[str, str]:
        return {}

    assert ("/api/v1/oops", []) in undeclared(registry_app, registry_auth.PERMISSION_ATTRIBUTE)


@pytest.mark.parametrize(
    ("host", "auth", "allow_insecure", "allowed"),
    [
        ("127.0.0.1", False, False, True),
        ("::1", False, False, True),
        ("localhost", False, False, True),
        ("0.0.0.0", False, False, False),
        ("192.168.1.9", False, False, False),
        ("0.0.0.0", False, True, True),
        ("0.0.0.0", True, False, True),
    ],
)
def test_no_unauthenticated_serving_beyond_loopback(
    host: str, auth: bool, allow_insecure: bool, allowed: bool
) -> None:
    if allowed:
        check_binding(auth=auth, allow_insecure=allow_insecure, host=host)
    else:
        with pytest.raises(InsecureBinding, match="BERTH_ALLOW_INSECURE"):
            check_binding(auth=auth, allow_insecure=allow_insecure, host=host)


def test_python_m_serving_refuses_an_open_replica_on_all_interfaces() -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "BERTH_AUTH": "false", "BERTH_REGISTRY_URL": "http://127.0.0.1:9"}
    completed = subprocess.run(
        [sys.executable, "-m", "serving", "--host", "0.0.0.0", "--port", "9"],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode != 0
    assert b"BERTH_ALLOW_INSECURE" in completed.stderr
