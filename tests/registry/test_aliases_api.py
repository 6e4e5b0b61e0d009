"""Aliases: promotion, optimistic concurrency, A/B specs, history, rollback that walks back."""

from __future__ import annotations

import httpx
import pytest

from tests.fixtures.factories import promote, upload_ok
from tests.registry.test_models_api import assert_error


@pytest.fixture
def three_versions(api: httpx.Client) -> httpx.Client:
    for _ in range(3):
        upload_ok(api, "churn")
    return api


def served(api: httpx.Client, alias: str = "production") -> list[int]:
    body = api.get(f"/models/churn/aliases/{alias}").json()
    return [v["version"] for v in body["variants"]]


def test_promote_points_the_alias_and_returns_its_revision(three_versions: httpx.Client) -> None:
    api = three_versions
    response = promote(api, "churn", 2, reason="better auc")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["revision"] == 1
    assert body["variants"] == [{"version": 2, "weight": 100}]
    assert body["shadow"] == []
    assert body["reason"] == "better auc"
    assert response.headers["etag"] == '"1"'
    got = api.get("/models/churn/aliases/production")
    assert got.headers["etag"] == '"1"'
    assert {"alias", "revision", "variants", "shadow", "updated_at", "updated_by"} <= set(
        got.json()
    )


def test_if_match_guards_against_lost_updates(three_versions: httpx.Client) -> None:
    api = three_versions
    promote(api, "churn", 1)
    ok = api.put(
        "/models/churn/aliases/production", json={"version": 2}, headers={"If-Match": '"1"'}
    )
    assert ok.status_code == 200
    stale = api.put(
        "/models/churn/aliases/production", json={"version": 3}, headers={"If-Match": "1"}
    )
    body = assert_error(stale, 409, "revision_mismatch")
    assert body["detail"] == {"current_revision": 2, "if_match": 1}
    assert served(api) == [2]
    assert_error(
        api.put(
            "/models/churn/aliases/production", json={"version": 3}, headers={"If-Match": "two"}
        ),
        400,
        "bad_request",
    )


def test_if_match_zero_creates_only_if_absent(three_versions: httpx.Client) -> None:
    api = three_versions
    first = api.put("/models/churn/aliases/staging", json={"version": 1}, headers={"If-Match": "0"})
    assert first.status_code == 200
    again = api.put("/models/churn/aliases/staging", json={"version": 2}, headers={"If-Match": "0"})
    assert_error(again, 409, "revision_mismatch")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"version": 9}, "unknown_version"),
        (
            {"variants": [{"version": 1, "weight": 50}, {"version": 9, "weight": 50}]},
            "unknown_version",
        ),
        ({"version": 1, "shadow": [9]}, "unknown_version"),
    ],
)
def test_promoting_a_missing_version_is_a_422_naming_it(
    three_versions: httpx.Client, body: dict[str, object], code: str
) -> None:
    response = three_versions.put("/models/churn/aliases/production", json=body)
    error = assert_error(response, 422, code)
    assert "version 9 of model 'churn'" in str(error["message"])
    assert_error(three_versions.get("/models/churn/aliases/production"), 404, "alias_not_found")


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"version": 1, "variants": [{"version": 1, "weight": 1}]},
        {"variants": []},
        {"variants": [{"version": 1, "weight": 0}]},
        {"variants": [{"version": 1, "weight": 50}, {"version": 1, "weight": 50}]},
        {"variants": [{"version": 1, "weight": -1}]},
        {"version": 1, "shadow": [1]},
        {"version": 0},
    ],
)
def test_malformed_specs_are_rejected(
    three_versions: httpx.Client, body: dict[str, object]
) -> None:
    assert_error(
        three_versions.put("/models/churn/aliases/production", json=body), 422, "invalid_request"
    )


def test_variants_and_shadows_are_stored_as_given(three_versions: httpx.Client) -> None:
    api = three_versions
    spec = {"variants": [{"version": 1, "weight": 90}, {"version": 2, "weight": 10}], "shadow": [3]}
    body = api.put("/models/churn/aliases/production", json=spec).json()
    assert body["variants"] == spec["variants"]
    assert body["shadow"] == [3]


def test_rollback_walks_back_and_never_toggles(three_versions: httpx.Client) -> None:
    api = three_versions
    for version in (1, 2, 3):
        promote(api, "churn", version)
    first = api.post("/models/churn/aliases/production/rollback")
    assert first.status_code == 200, first.text
    assert first.json()["revision"] == 4
    assert served(api) == [2]
    second = api.post("/models/churn/aliases/production/rollback", json={"reason": "still bad"})
    assert second.json()["revision"] == 5
    assert served(api) == [1]
    body = assert_error(
        api.post("/models/churn/aliases/production/rollback"), 409, "nothing_to_roll_back"
    )
    assert "production" in str(body["message"])
    history = api.get("/models/churn/aliases/production/history").json()["items"]
    assert [(h["revision"], h["action"], h["restored_revision"]) for h in history] == [
        (5, "rollback", 1),
        (4, "rollback", 2),
        (3, "set", None),
        (2, "set", None),
        (1, "set", None),
    ]
    assert history[0]["reason"] == "still bad"


def test_a_promotion_after_a_rollback_walks_back_through_real_history(
    three_versions: httpx.Client,
) -> None:
    api = three_versions
    promote(api, "churn", 1)
    promote(api, "churn", 2)
    api.post("/models/churn/aliases/production/rollback")  # serves 1
    promote(api, "churn", 3)
    api.post("/models/churn/aliases/production/rollback")
    assert served(api) == [1]  # what served right before 3 was promoted
    api.post("/models/churn/aliases/production/rollback")
    assert served(api) == [2]


def test_rollback_to_a_named_revision(three_versions: httpx.Client) -> None:
    api = three_versions
    for version in (1, 2, 3):
        promote(api, "churn", version)
    body = api.post("/models/churn/aliases/production/rollback", json={"to_revision": 1}).json()
    assert body["variants"] == [{"version": 1, "weight": 100}]
    assert_error(
        api.post("/models/churn/aliases/production/rollback", json={"to_revision": 42}),
        404,
        "revision_not_found",
    )


def test_rollback_onto_an_archived_version_is_refused(three_versions: httpx.Client) -> None:
    api = three_versions
    promote(api, "churn", 1)
    promote(api, "churn", 2)
    assert api.post("/models/churn/versions/1/archive").status_code == 200
    body = assert_error(
        api.post("/models/churn/aliases/production/rollback"), 422, "version_archived"
    )
    assert "revision 1" in str(body["message"])
    assert served(api) == [2]


def test_rollback_honours_if_match(three_versions: httpx.Client) -> None:
    api = three_versions
    promote(api, "churn", 1)
    promote(api, "churn", 2)
    stale = api.post("/models/churn/aliases/production/rollback", headers={"If-Match": "1"})
    assert_error(stale, 409, "revision_mismatch")
    ok = api.post("/models/churn/aliases/production/rollback", headers={"If-Match": "2"})
    assert ok.status_code == 200


def test_delete_is_recorded_and_the_chain_continues(three_versions: httpx.Client) -> None:
    api = three_versions
    promote(api, "churn", 1)
    assert api.delete("/models/churn/aliases/production").status_code == 204
    assert_error(api.get("/models/churn/aliases/production"), 404, "alias_not_found")
    assert_error(api.delete("/models/churn/aliases/production"), 404, "alias_not_found")
    again = promote(api, "churn", 2)
    assert again.json()["revision"] == 3
    history = api.get("/models/churn/aliases/production/history").json()["items"]
    assert [h["action"] for h in history] == ["set", "delete", "set"]
    assert history[1]["variants"] == []
    # Rolling back from a re-created alias skips the deletion and restores what it held before.
    api.post("/models/churn/aliases/production/rollback")
    assert served(api) == [1]


def test_aliases_of_a_model_are_listed(three_versions: httpx.Client) -> None:
    api = three_versions
    promote(api, "churn", 1, alias="production")
    promote(api, "churn", 2, alias="staging")
    names = [a["alias"] for a in api.get("/models/churn/aliases").json()]
    assert names == ["production", "staging"]


def test_history_paginates(three_versions: httpx.Client) -> None:
    api = three_versions
    for version in (1, 2, 3, 1, 2):
        promote(api, "churn", version)
    page = api.get("/models/churn/aliases/production/history", params={"limit": 2}).json()
    assert [h["revision"] for h in page["items"]] == [5, 4]
    rest = api.get(
        "/models/churn/aliases/production/history",
        params={"limit": 10, "cursor": page["next_cursor"]},
    ).json()
    assert [h["revision"] for h in rest["items"]] == [3, 2, 1]


def test_alias_names_are_validated(three_versions: httpx.Client) -> None:
    assert_error(promote(three_versions, "churn", 1, alias="Prod"), 422, "invalid_request")
    # An encoded slash is decoded before routing: no route matches, which is the safe outcome.
    traversal = three_versions.get("/models/churn/aliases/..%2F..%2Fetc")
    assert traversal.status_code in {404, 422}
    assert traversal.json()["error"] in {"not_found", "invalid_request"}


def test_every_mutation_leaves_an_audit_event(three_versions: httpx.Client) -> None:
    api = three_versions
    promote(api, "churn", 1)
    api.post("/models/churn/aliases/production/rollback", json={"to_revision": 1})
    api.delete("/models/churn/aliases/production")
    api.post("/models/churn/versions/3/archive")
    events = api.get("/audit", params={"model": "churn", "limit": 100}).json()["items"]
    actions = [e["action"] for e in reversed(events)]
    assert actions == [
        "model.create",
        "version.create",
        "version.create",
        "version.create",
        "alias.set",
        "alias.rollback",
        "alias.delete",
        "version.archive",
    ]
    assert all(e["actor"] == "local" for e in events)
    assert events[-5]["detail"]["revision"] == 1


def test_a_failed_mutation_leaves_no_audit_event(three_versions: httpx.Client) -> None:
    api = three_versions
    before = len(api.get("/audit", params={"limit": 1000}).json()["items"])
    promote(api, "churn", 99)
    assert len(api.get("/audit", params={"limit": 1000}).json()["items"]) == before
