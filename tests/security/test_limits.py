"""Size limits: every registry JSON body, and the shape of predict bodies."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

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


def _verdict(value: object, text: bytes | None, *, depth: int, items: int) -> str:
    try:
        check_json(value, text=text, max_depth=depth, max_items=items)
    except MalformedBody:
        return "too deep"
    except PayloadTooLarge:
        return "too long"
    return "ok"


JSON_VALUES = st.recursive(
    # Short leaves, so arrays near the item bound are also near the 2n + 1 bytes of the
    # shortcut; brackets inside strings, which the count must survive.
    st.none() | st.integers(0, 9) | st.text(alphabet='[]{}"a', max_size=2),
    lambda children: (
        st.lists(children, max_size=7)
        | st.dictionaries(st.text(alphabet="a{}", max_size=2), children, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=400)
# Right past each bound: objects alone past the depth, an array one item past the count.
@example(value={"a": {"a": {}}}, compact=True, encoding="utf-16", depth=2, items=100)
@example(value=[0] * 7, compact=True, encoding="utf-8", depth=1, items=6)
@given(
    value=JSON_VALUES,
    compact=st.booleans(),
    encoding=st.sampled_from(["utf-8", "utf-16", "utf-32-be"]),
    depth=st.integers(1, 6),
    items=st.integers(2, 6),
)
def test_the_shape_check_from_text_agrees_with_the_walk(
    value: object, compact: bool, encoding: str, depth: int, items: int
) -> None:
    """The bracket-count shortcut never lets through what the walk refuses, in any encoding
    `json.loads` reads (brackets inside strings only make it walk). Compact separators put
    arrays right at the 2n + 1 bytes the shortcut counts on."""
    separators = (",", ":") if compact else None
    text = json.dumps(value, separators=separators).encode(encoding)
    parsed = json.loads(text)
    assert _verdict(parsed, text, depth=depth, items=items) == _verdict(
        parsed, None, depth=depth, items=items
    )


def test_the_shape_check_from_text_still_refuses() -> None:
    deep = ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)).encode()
    with pytest.raises(MalformedBody):
        check_json(json.loads(deep), text=deep)
    wide = json.dumps([0] * 5).encode()
    with pytest.raises(PayloadTooLarge):
        check_json(json.loads(wide), text=wide, max_items=4)


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
