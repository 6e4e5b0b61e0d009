"""Size limits: every registry JSON body, and the shape of predict bodies."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from serving.errors import MalformedBody, PayloadTooLarge
from serving.limits import MAX_DEPTH, MAX_ITEMS, check_json
from tests.conftest import Backend, RunningRegistry, make_settings, run_registry
from tests.fixtures.factories import joblib_bytes, linear_model, promote, upload_ok
from tests.fixtures.waiting import eventually
from tests.registry.test_models_api import assert_error
from tests.security.conftest import RunningServing

LIMIT = 4096


@pytest.fixture
def small_bodies(sqlite_backend: Backend, tmp_path: Path) -> Iterator[RunningRegistry]:
    yield from run_registry(make_settings(sqlite_backend, tmp_path, max_request_bytes=LIMIT))


JSON_ROUTES = [
    ("POST", "/models", {"name": "big"}),
    ("PATCH", "/models/churn", {}),
    ("PATCH", "/models/churn/versions/1", {}),
    ("PUT", "/models/churn/aliases/production", {"version": 1}),
    ("POST", "/models/churn/aliases/production/rollback", {}),
    ("PUT", "/replicas/r1", {"position": 0}),
    ("POST", "/tokens", {"name": "big", "role": "reader"}),
]


def test_every_json_route_refuses_a_body_past_the_limit(small_bodies: RunningRegistry) -> None:
    api = small_bodies.api
    upload_ok(api, "churn", joblib_bytes(linear_model()))  # the upload route is not capped
    padding = "x" * (LIMIT + 10)
    for method, path, body in JSON_ROUTES:
        declared = api.request(method, path, json={**body, "description": padding})
        payload = assert_error(declared, 413, "payload_too_large")
        assert payload["detail"] == {"max_request_bytes": LIMIT}
        streamed = api.request(
            method,
            path,
            content=iter([b'{"description": "', padding.encode(), b'"}']),
            headers={"content-type": "application/json"},
        )
        assert_error(streamed, 413, "payload_too_large")
    assert api.post("/models", json={"name": "small"}).status_code == 201


def test_the_json_shape_check() -> None:
    check_json({"inputs": [[1.0, 2.0]] * 1000})
    deep: object = 1
    for _ in range(MAX_DEPTH):
        deep = [deep]
    check_json(deep)
    with pytest.raises(MalformedBody):
        check_json([deep])
    with pytest.raises(PayloadTooLarge):
        check_json({"inputs": [0] * (MAX_ITEMS + 1)})
    with pytest.raises(PayloadTooLarge):
        check_json({str(i): 0 for i in range(MAX_ITEMS + 1)})


@pytest.fixture
def open_registry(sqlite_backend: Backend, tmp_path: Path) -> Iterator[RunningRegistry]:
    yield from run_registry(make_settings(sqlite_backend, tmp_path))


ROW = {"inputs": [[0.1, 0.2, 0.3, 0.4]]}


def test_predict_refuses_deep_nesting_and_huge_arrays(
    open_registry: RunningRegistry, start_serving: Callable[..., RunningServing]
) -> None:
    upload_ok(open_registry.api, "churn", joblib_bytes(linear_model()))
    promote(open_registry.api, "churn", 1)
    serving = start_serving(open_registry, auth=False)
    with serving.client() as client:
        eventually(
            lambda: client.post("/models/churn/predict", json=ROW).status_code == 200, within=30
        )
        for inputs, status, code in (
            ("[" * 40 + "]" * 40, 400, "malformed_body"),
            ("[" * 100_000 + "]" * 100_000, 400, "malformed_body"),
            ("[" + ",".join(["0"] * (MAX_ITEMS + 1)) + "]", 413, "payload_too_large"),
        ):
            response = client.post(
                "/models/churn/predict",
                content=f'{{"inputs": {inputs}}}',
                headers={"content-type": "application/json"},
            )
            assert_error(response, status, code)
        too_big = httpx.post(
            serving.url + "/models/churn/predict",
            content=b" " * (33 * 1024 * 1024),
            headers={"content-type": "application/json"},
            timeout=60,
        )
        assert_error(too_big, 413, "payload_too_large")
