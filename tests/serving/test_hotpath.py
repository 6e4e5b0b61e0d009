"""The inference routes' short way past the middleware stack, and what it must still do."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from serving.hotpath import IndexedHeaders, ServingApp
from serving.main import create_app
from tests.fixtures.servers import LiveServer
from tests.serving.conftest import ServingClient, eventually, serving_settings
from tests.serving.factories import row
from tests.serving.fakes import FakeRegistry

Start = Callable[..., ServingClient]


class Boom(RuntimeError):
    pass


def explode(*args: Any, **kwargs: Any) -> Any:
    raise Boom("a bug, not bad input")


def assert_uniform_500(response: httpx.Response) -> None:
    assert response.status_code == 500
    body = response.json()
    assert body["error"] == "internal_error"
    assert body["message"].startswith("internal error ")
    assert "a bug" not in response.text  # the traceback stays in the log
    assert response.headers["X-Request-Id"] == "caller-id-1"


def test_a_bug_on_the_short_way_is_the_uniform_json_500_logged_once(
    two_versions: FakeRegistry,
    start_serving: Start,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = start_serving()
    eventually(lambda: client.get("/readyz").status_code == 200)
    monkeypatch.setattr(client.runtime.service, "predict_alias", explode)
    with caplog.at_level(logging.ERROR, logger="serving.hotpath"):
        response = client.post(
            "/models/churn/predict",
            json={"inputs": [row()]},
            headers={"X-Request-Id": "caller-id-1"},
        )
    assert_uniform_500(response)
    incident = response.json()["message"].split()[2].rstrip(";")
    (logged,) = [r for r in caplog.records if r.exc_info and r.exc_info[0] is Boom]
    assert incident in logged.getMessage()
    # The connection is kept: the next request on it is answered.
    assert client.post("/models/churn/versions/2/predict", json={"input": row()}).status_code == 200


def test_a_bug_on_the_full_stack_is_the_same_json_500(
    two_versions: FakeRegistry, start_serving: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = start_serving()
    monkeypatch.setattr(client.runtime, "status", explode)
    assert_uniform_500(client.get("/status", headers={"X-Request-Id": "caller-id-1"}))


def test_with_tracing_on_inference_takes_the_full_stack_and_still_answers(
    two_versions: FakeRegistry,
) -> None:
    provider = TracerProvider()
    app = create_app(
        serving_settings(),
        transport=httpx.ASGITransport(two_versions.app),
        tracer_provider=provider,
    )
    assert isinstance(app, ServingApp)
    assert app.hot_routes == ()  # the server span is made by FastAPI's telemetry, in the stack
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        eventually(lambda: client.get("/readyz").status_code == 200)
        response = client.post("/models/churn/predict", json={"inputs": [row()]})
        assert response.status_code == 200
        assert response.json()["version"] == 1
        assert response.headers["X-Request-Id"]
    provider.shutdown()


def test_every_inference_route_of_every_protocol_takes_the_short_way(
    two_versions: FakeRegistry,
) -> None:
    app = create_app(serving_settings(), transport=httpx.ASGITransport(two_versions.app))
    assert isinstance(app, ServingApp)
    short = {route.path for route in app.hot_routes}
    assert {
        "/models/{name}/predict",
        "/models/{name}/aliases/{alias}/predict",
        "/models/{name}/versions/{version:int}/predict",
        "/v2/models/{name}/infer",
        "/v2/models/{name}/versions/{version}/infer",
        "/v1/models/{name}:predict",
        "/invocations",
    } <= short
    # The same Route objects as the router's, so OpenAPI and the route audit see them.
    assert all(route in app.router.routes for route in app.hot_routes)


def test_only_post_routes_may_take_the_short_way() -> None:
    async def endpoint(request: Request) -> Response:
        return Response()

    app = ServingApp()
    with pytest.raises(ValueError, match="only POST"):
        app.take_short_way([Route("/x", endpoint, methods=["GET"])])


@pytest.mark.parametrize("way", ["short", "full stack (tracing on)"])
def test_a_caller_gone_before_its_body_arrived_gets_no_answer_and_no_error_log(
    two_versions: FakeRegistry, caplog: pytest.LogCaptureFixture, way: str
) -> None:
    provider = TracerProvider() if way != "short" else None
    app = create_app(
        serving_settings(),
        transport=httpx.ASGITransport(two_versions.app),
        tracer_provider=provider,
    )
    assert bool(app.hot_routes) is (provider is None)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/models/churn/predict",
        "raw_path": b"/models/churn/predict",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8001),
    }
    with caplog.at_level(logging.WARNING):
        asyncio.run(app(scope, receive, send))
    assert sent == []
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


@pytest.mark.parametrize(
    "raw",
    [
        [],
        [(b"authorization", b"Bearer one"), (b"content-type", b"text/csv")],
        # Repeated: the first wins, as everywhere in Starlette.
        [(b"x-routing-key", b"first"), (b"host", b"h"), (b"x-routing-key", b"second")],
    ],
)
def test_indexed_headers_answer_as_starlettes_do(raw: list[tuple[bytes, bytes]]) -> None:
    scope = {"type": "http", "headers": raw}
    indexed, plain = IndexedHeaders(scope), Headers(scope=scope)
    for name in ("authorization", "Content-Type", "X-ROUTING-KEY", "host", "absent"):
        assert indexed.get(name) == plain.get(name)
        assert indexed.get(name, "fallback") == plain.get(name, "fallback")
        assert (name in indexed) == (name in plain)
        if name in plain:
            assert indexed[name] == plain[name]
        else:
            with pytest.raises(KeyError):
                indexed[name]
    assert indexed.getlist("x-routing-key") == plain.getlist("x-routing-key")
    assert indexed == plain
