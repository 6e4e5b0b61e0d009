"""Models: create, list with cursor pagination and filters, read, patch, name rules."""

from __future__ import annotations

import httpx
import pytest

from tests.fixtures.factories import upload_ok


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "message", "detail"}
    assert body["error"] == code
    assert isinstance(body["message"], str)
    assert body["message"]
    return body


def test_create_get_and_patch_a_model(api: httpx.Client) -> None:
    created = api.post(
        "/models", json={"name": "churn", "description": "who leaves", "tags": {"team": "growth"}}
    )
    assert created.status_code == 201, created.text
    assert created.json()["latest_version"] == 0

    patched = api.patch(
        "/models/churn", json={"description": "who churns", "tags": {"team": "risk"}}
    )
    assert patched.status_code == 200
    got = api.get("/models/churn").json()
    assert got["description"] == "who churns"
    assert got["tags"] == {"team": "risk"}


def test_creating_an_existing_model_is_a_conflict(api: httpx.Client) -> None:
    assert api.post("/models", json={"name": "churn"}).status_code == 201
    body = assert_error(api.post("/models", json={"name": "churn"}), 409, "model_exists")
    assert "churn" in str(body["message"])


def test_unknown_model_is_404_naming_it(api: httpx.Client) -> None:
    body = assert_error(api.get("/models/nope"), 404, "model_not_found")
    assert body["message"] == "model 'nope' does not exist"


@pytest.mark.parametrize(
    "name",
    ["Churn", "-lead", ".hidden", "a b", "x" * 129, "ü", "churn;drop", "%2e%2e", "..", "a/b"],
)
def test_names_outside_the_pattern_are_rejected(api: httpx.Client, name: str) -> None:
    response = api.post("/models", json={"name": name})
    assert_error(response, 422, "invalid_request")
    # And as a path segment, no route may treat it as a model name.
    assert api.get(f"/models/{name}").status_code in {404, 422}


def test_first_upload_creates_the_model(api: httpx.Client) -> None:
    upload_ok(api, "fraud")
    model = api.get("/models/fraud").json()
    assert model["latest_version"] == 1


def test_list_models_paginates_with_a_cursor(api: httpx.Client) -> None:
    names = [f"model-{i:02d}" for i in range(7)]
    for name in names:
        assert api.post("/models", json={"name": name}).status_code == 201
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = api.get("/models", params=params).json()
        seen += [m["name"] for m in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == names
    assert pages == 3


def test_list_models_filters_by_prefix_and_tag(api: httpx.Client) -> None:
    api.post("/models", json={"name": "fraud-eu", "tags": {"region": "eu"}})
    api.post("/models", json={"name": "fraud-us", "tags": {"region": "us"}})
    api.post("/models", json={"name": "churn", "tags": {"region": "eu"}})
    by_prefix = [m["name"] for m in api.get("/models", params={"prefix": "fraud"}).json()["items"]]
    assert by_prefix == ["fraud-eu", "fraud-us"]
    by_tag = [m["name"] for m in api.get("/models", params={"tag": "region=eu"}).json()["items"]]
    assert by_tag == ["churn", "fraud-eu"]
    # A prefix is the start of a name: LIKE wildcards (or anything else a name cannot hold) are
    # refused, never interpreted.
    assert_error(api.get("/models", params={"prefix": "fraud%"}), 422, "invalid_request")


def test_a_forged_cursor_is_a_400(api: httpx.Client) -> None:
    assert_error(api.get("/models", params={"cursor": "not-a-cursor"}), 400, "invalid_cursor")


def test_unknown_fields_are_rejected_not_ignored(api: httpx.Client) -> None:
    assert_error(api.post("/models", json={"name": "a", "owner": "me"}), 422, "invalid_request")


def test_malformed_json_is_a_uniform_422(api: httpx.Client) -> None:
    response = api.post(
        "/models", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_error(response, 422, "invalid_request")


def test_unknown_route_is_a_uniform_404(api: httpx.Client) -> None:
    assert_error(api.get("/nothing/here"), 404, "not_found")
