"""Tokens and roles: deny by default, least privilege, scoped tokens, revocation, audit."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.dependencies.models import Dependant
from sqlalchemy import event

from registry import auth
from registry.config import RegistrySettings
from registry.errors import Unauthenticated
from registry.main import InsecureBinding, check_binding, create_app
from registry.schemas import Role, TokenCreate
from tests.conftest import Backend, RunningRegistry, make_settings, run_registry
from tests.fixtures.factories import promote, random_bytes, upload
from tests.fixtures.routes import api_routes
from tests.registry.test_models_api import assert_error


@pytest.fixture
def secured(backend: Backend, tmp_path: Path) -> Iterator[RunningRegistry]:
    yield from run_registry(make_settings(backend, tmp_path, auth=True))


def make_token(
    registry: RunningRegistry,
    role: Role,
    *,
    name: str | None = None,
    models: list[str] | None = None,
) -> str:
    with registry.db.transaction() as session:
        _, secret = auth.create_token(
            session,
            TokenCreate(name=name or role.value, role=role, models=models),
            created_by="test",
        )
    return secret


def test_no_token_is_401_with_a_bearer_challenge(secured: RunningRegistry) -> None:
    response = secured.api.get("/models")
    assert_error(response, 401, "unauthenticated")
    assert response.headers["www-authenticate"] == "Bearer"
    assert_error(secured.client("berth_not-a-real-token").get("/models"), 401, "unauthenticated")


def test_health_is_public(secured: RunningRegistry) -> None:
    assert httpx.get(secured.url + "/healthz").status_code == 200


def test_roles_are_ordered_reader_publisher_admin(secured: RunningRegistry) -> None:
    reader = secured.client(make_token(secured, Role.reader))
    publisher = secured.client(make_token(secured, Role.publisher))
    admin = secured.client(make_token(secured, Role.admin))

    assert_error(upload(reader, "churn"), 403, "forbidden")
    assert upload(publisher, "churn").status_code == 201
    assert reader.get("/models/churn/versions/1").status_code == 200

    assert_error(promote(reader, "churn", 1), 403, "forbidden")
    assert promote(publisher, "churn", 1).status_code == 200

    upload(publisher, "churn")
    promote(publisher, "churn", 2)
    assert_error(publisher.post("/models/churn/versions/1/archive"), 403, "forbidden")
    assert admin.post("/models/churn/versions/1/archive").status_code == 200

    assert_error(publisher.post("/tokens", json={"name": "x", "role": "reader"}), 403, "forbidden")
    assert_error(publisher.post("/gc"), 403, "forbidden")
    assert admin.post("/gc", params={"dry_run": True}).status_code == 200


def test_a_scoped_token_reaches_only_its_models(secured: RunningRegistry) -> None:
    scoped = secured.client(make_token(secured, Role.publisher, models=["churn"]))
    assert upload(scoped, "churn").status_code == 201
    body = assert_error(upload(scoped, "fraud"), 403, "forbidden")
    assert "fraud" in str(body["message"])


# --- scopes on the routes that name no model in their path ------------------------------------


@pytest.fixture
def two_models(secured: RunningRegistry) -> httpx.Client:
    """Models `churn` (A) and `fraud` (B), each promoted twice; returns an admin client."""
    admin = secured.client(make_token(secured, Role.admin, name="root"))
    for model in ("churn", "fraud"):
        for version in (1, 2):
            assert upload(admin, model).status_code == 201
            assert promote(admin, model, version).status_code == 200
    return admin


def test_a_scoped_token_lists_only_its_models(
    secured: RunningRegistry, two_models: httpx.Client
) -> None:
    assert [m["name"] for m in two_models.get("/models").json()["items"]] == ["churn", "fraud"]
    scoped = secured.client(make_token(secured, Role.reader, models=["churn"]))
    assert [m["name"] for m in scoped.get("/models").json()["items"]] == ["churn"]
    assert scoped.get("/models", params={"prefix": "fr"}).json()["items"] == []
    first = scoped.get("/models", params={"limit": 1}).json()
    assert [m["name"] for m in first["items"]] == ["churn"]
    assert first["next_cursor"] is None
    nothing = secured.client(make_token(secured, Role.reader, name="none", models=[]))
    assert nothing.get("/models").json()["items"] == []


def test_a_scoped_publisher_cannot_create_other_models(secured: RunningRegistry) -> None:
    scoped = secured.client(make_token(secured, Role.publisher, models=["churn"]))
    body = assert_error(scoped.post("/models", json={"name": "fraud"}), 403, "forbidden")
    assert "fraud" in str(body["message"])
    assert scoped.post("/models", json={"name": "churn"}).status_code == 201
    admin = secured.client(make_token(secured, Role.admin))
    assert [m["name"] for m in admin.get("/models").json()["items"]] == ["churn"]


def test_a_scoped_token_reads_only_its_models_audit_events(
    secured: RunningRegistry, two_models: httpx.Client
) -> None:
    scoped = secured.client(make_token(secured, Role.reader, models=["churn"]))
    two_models.post("/tokens", json={"name": "other", "role": "reader"})
    everything = two_models.get("/audit", params={"limit": 1000}).json()["items"]
    # None: the token events, which concern no model.
    assert {e["model"] for e in everything} == {"churn", "fraud", None}
    events = scoped.get("/audit", params={"limit": 1000}).json()["items"]
    assert events == [e for e in everything if e["model"] == "churn"]
    assert scoped.get("/audit", params={"model": "churn", "limit": 1000}).json()["items"] == events
    # As its own routes answer: 403 for a model outside the scope, whether it exists or not.
    assert_error(scoped.get("/audit", params={"model": "fraud"}), 403, "forbidden")
    assert_error(scoped.get("/models/fraud"), 403, "forbidden")
    assert_error(scoped.get("/audit", params={"model": "nowhere"}), 403, "forbidden")
    paged = scoped.get("/audit", params={"limit": 2}).json()
    rest = scoped.get("/audit", params={"limit": 1000, "cursor": paged["next_cursor"]}).json()
    assert paged["items"] + rest["items"] == events


def test_a_scoped_token_sees_only_its_models_routing(
    secured: RunningRegistry, two_models: httpx.Client
) -> None:
    full = two_models.get("/routing").json()
    assert {a["model"] for a in full["aliases"]} == {"churn", "fraud"}
    scoped = secured.client(make_token(secured, Role.reader, models=["churn"]))
    snapshot = scoped.get("/routing").json()
    assert snapshot["aliases"] == [a for a in full["aliases"] if a["model"] == "churn"]
    # The whole feed's position: following /changes from it misses nothing and repeats nothing.
    assert snapshot["position"] == full["position"] == 4


def test_a_scoped_token_follows_only_its_models_changes_without_gaps(
    secured: RunningRegistry, two_models: httpx.Client
) -> None:
    scoped = secured.client(make_token(secured, Role.reader, models=["churn"]))
    out = scoped.get("/changes", params={"after": 0}).json()
    assert [(c["seq"], c["model"]) for c in out["changes"]] == [(1, "churn"), (2, "churn")]
    assert (out["position"], out["head"]) == (4, 4)  # past fraud's 3 and 4, read or not

    # Only the other model changes: nothing to see, but the position moves past it, at once
    # without a wait and at the deadline with one (which it waited out, not returned early).
    promote(two_models, "fraud", 1)
    assert scoped.get("/changes", params={"after": 4}).json() == {
        "changes": [],
        "position": 5,
        "head": 5,
    }
    started = time.monotonic()
    waited = scoped.get("/changes", params={"after": 4, "wait": 1}).json()
    assert time.monotonic() - started >= 0.9
    assert (waited["changes"], waited["position"]) == ([], 5)

    # A long-poll that steps past another model's change and returns with the next of its own.
    with ThreadPoolExecutor(1) as pool:
        polling = pool.submit(scoped.get, "/changes", params={"after": 5, "wait": 10})
        time.sleep(0.3)
        promote(two_models, "fraud", 2)
        time.sleep(0.3)
        assert not polling.done()
        promote(two_models, "churn", 1)
        answer = polling.result(timeout=10).json()
    assert [(c["seq"], c["model"], c["revision"]) for c in answer["changes"]] == [(7, "churn", 3)]
    assert answer["position"] == answer["head"] == 7

    # Followed page by page from 0, a scoped reader sees exactly its model's changes, in order.
    seen, position = [], 0
    while True:
        page = scoped.get("/changes", params={"after": position, "limit": 1}).json()
        if page["position"] == position:
            break
        seen += [c["seq"] for c in page["changes"]]
        position = page["position"]
    everything = two_models.get("/changes", params={"after": 0}).json()["changes"]
    assert seen == [c["seq"] for c in everything if c["model"] == "churn"] == [1, 2, 7]
    assert position == 7


def test_a_scoped_token_sees_only_its_models_in_replica_reports(
    secured: RunningRegistry, two_models: httpx.Client
) -> None:
    serving = secured.client(make_token(secured, Role.reader, name="serving"))
    report = {
        "position": 4,
        "serving": [
            {"model": "churn", "alias": "production", "revision": 2},
            {"model": "fraud", "alias": "production", "revision": 2},
        ],
    }
    assert serving.put("/replicas/r1", json=report).status_code == 200
    scoped = secured.client(make_token(secured, Role.reader, models=["churn"]))
    [replica] = scoped.get("/replicas").json()
    assert replica["serving"] == [{"model": "churn", "alias": "production", "revision": 2}]
    [full] = two_models.get("/replicas").json()
    assert len(full["serving"]) == 2


def test_a_scoped_admin_cannot_act_on_the_whole_registry(secured: RunningRegistry) -> None:
    """Tokens and gc concern every model: a scoped admin minting an unscoped token would escape
    its scope."""
    scoped = secured.client(make_token(secured, Role.admin, models=["churn"]))
    assert upload(scoped, "churn").status_code == 201
    assert scoped.post("/models/churn/versions/1/archive").status_code == 200
    for response in (
        scoped.post("/tokens", json={"name": "escape", "role": "admin"}),
        scoped.get("/tokens"),
        scoped.delete("/tokens/1"),
        scoped.post("/gc", params={"dry_run": True}),
    ):
        assert_error(response, 403, "forbidden")


# --- replicas ---------------------------------------------------------------------------------


def test_a_replica_id_belongs_to_the_token_that_registered_it(secured: RunningRegistry) -> None:
    serving = secured.client(make_token(secured, Role.reader, name="serving"))
    intruder = secured.client(make_token(secured, Role.reader, name="intruder"))
    publisher = secured.client(make_token(secured, Role.publisher))
    scoped_admin = secured.client(make_token(secured, Role.admin, name="a", models=["churn"]))
    admin = secured.client(make_token(secured, Role.admin))
    report = {"position": 0, "serving": []}
    faked = {"position": 9, "serving": [{"model": "churn", "alias": "production", "revision": 9}]}

    assert serving.put("/replicas/r1", json=report).status_code == 200
    assert serving.put("/replicas/r1", json=report | {"position": 1}).status_code == 200
    for client in (intruder, publisher, scoped_admin, admin):
        body = assert_error(client.put("/replicas/r1", json=faked), 403, "forbidden")
        assert "r1" in str(body["message"])
    for client in (intruder, publisher, scoped_admin):
        assert_error(client.delete("/replicas/r1"), 403, "forbidden")
    [replica] = admin.get("/replicas").json()
    assert (replica["replica_id"], replica["position"], replica["serving"]) == ("r1", 1, [])

    # An admin over every model may remove a replica that will not say goodbye itself.
    assert admin.delete("/replicas/r1").status_code == 204
    assert admin.get("/replicas").json() == []
    # The id is free again; its new owner reports and says goodbye, as serving does.
    assert intruder.put("/replicas/r1", json=report).status_code == 200
    assert_error(serving.put("/replicas/r1", json=report), 403, "forbidden")
    assert intruder.delete("/replicas/r1").status_code == 204
    assert_error(intruder.delete("/replicas/r1"), 404, "replica_not_found")


def test_a_replica_row_without_an_owner_is_adopted_by_the_first_reporter(
    secured: RunningRegistry,
) -> None:
    """Rows written before replicas had owners (or with auth off) keep working after an upgrade:
    the replica's next heartbeat claims the row, and from then on it is bound."""
    with secured.db.engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO replicas (id, last_seen, position, serving, failures) "
            "VALUES ('legacy', CURRENT_TIMESTAMP, 0, '[]', '[]')"
        )
    serving = secured.client(make_token(secured, Role.reader, name="serving"))
    intruder = secured.client(make_token(secured, Role.reader, name="intruder"))
    assert serving.put("/replicas/legacy", json={"position": 3}).status_code == 200
    assert_error(intruder.put("/replicas/legacy", json={"position": 4}), 403, "forbidden")
    assert_error(intruder.delete("/replicas/legacy"), 403, "forbidden")
    assert serving.delete("/replicas/legacy").status_code == 204


def test_tokens_are_shown_once_stored_hashed_and_revocable(secured: RunningRegistry) -> None:
    admin = secured.client(make_token(secured, Role.admin))
    created = admin.post("/tokens", json={"name": "ci", "role": "publisher"})
    assert created.status_code == 201
    secret = created.json()["token"]
    assert secret.startswith("berth_")
    listed = admin.get("/tokens").json()
    assert all("token" not in t for t in listed)
    with secured.db.engine.connect() as conn:
        stored = [row[0] for row in conn.exec_driver_sql("SELECT secret_hash FROM tokens")]
    assert secret not in stored
    assert auth.hash_secret(secret) in stored

    ci = secured.client(secret)
    assert ci.get("/models").status_code == 200
    revoked = admin.delete(f"/tokens/{created.json()['id']}")
    assert revoked.json()["revoked_at"] is not None
    assert_error(ci.get("/models"), 401, "unauthenticated")


def test_a_token_revoked_elsewhere_stops_working_within_the_cache_ttl(
    backend: Backend, tmp_path: Path
) -> None:
    settings = make_settings(backend, tmp_path, auth=True, token_cache_seconds=0.5)
    for registry in run_registry(settings):
        secret = make_token(registry, Role.reader, name="short-lived")
        client = registry.client(secret)
        assert client.get("/models").status_code == 200
        # Revoked as another registry process or `berth token revoke --database` would: in the
        # database only. This process trusts its cached answer until the TTL runs out.
        with registry.db.transaction() as session:
            [token] = [t for t in auth.list_tokens(session) if t.name == "short-lived"]
            auth.revoke_token(session, token.id, actor="elsewhere")
        assert client.get("/models").status_code == 200
        time.sleep(0.6)
        assert_error(client.get("/models"), 401, "unauthenticated")


def test_callers_missing_the_token_cache_at_once_share_one_read() -> None:
    now = [0.0]
    cache = auth.TokenCache(5.0, clock=lambda: now[0])
    principal = auth.Principal(name="serving", role=Role.reader, token_id=7)
    reads: list[int] = []

    def read() -> auth.Principal:
        reads.append(1)
        time.sleep(0.3)  # every caller below arrives while this read is in flight
        return principal

    count = 16
    barrier = threading.Barrier(count)

    def resolve(_: int) -> auth.Principal:
        barrier.wait()
        return cache.resolve("digest", read)

    with ThreadPoolExecutor(count) as workers:
        assert list(workers.map(resolve, range(count))) == [principal] * count
    assert len(reads) == 1
    assert cache.resolve("digest", read) is principal  # cached
    assert len(reads) == 1
    now[0] = 5.0
    assert cache.resolve("digest", read) is principal  # expired: asked again
    assert len(reads) == 2

    def refused() -> auth.Principal:
        time.sleep(0.3)
        raise Unauthenticated("the bearer token is not valid")

    def resolve_refused(_: int) -> str:
        barrier.wait()
        try:
            cache.resolve("other", refused)
        except Unauthenticated as exc:
            return exc.code
        return "admitted"

    with ThreadPoolExecutor(count) as workers:
        assert set(workers.map(resolve_refused, range(count))) == {"unauthenticated"}
    assert cache.get("other") is None  # a refusal is never cached


def test_replicas_reporting_at_once_share_one_database_connection(
    secured: RunningRegistry,
) -> None:
    """A promotion makes every replica report at the same moment; the registry's demand on the
    database must not grow with the fleet."""
    reporter = secured.client(make_token(secured, Role.reader, name="serving"))
    assert reporter.put("/replicas/warm", json={"position": 0}).status_code == 200
    in_use = peak = 0
    lock = threading.Lock()

    def checkout(*_: Any) -> None:
        nonlocal in_use, peak
        with lock:
            in_use += 1
            peak = max(peak, in_use)

    def checkin(*_: Any) -> None:
        nonlocal in_use
        with lock:
            in_use -= 1

    count = 16
    barrier = threading.Barrier(count)

    def report(i: int) -> int:
        barrier.wait()
        return reporter.put(f"/replicas/r{i}", json={"position": i}).status_code

    pool = secured.db.engine.pool
    event.listen(pool, "checkout", checkout)
    event.listen(pool, "checkin", checkin)
    try:
        with ThreadPoolExecutor(count) as workers:
            statuses = list(workers.map(report, range(count)))
    finally:
        event.remove(pool, "checkout", checkout)
        event.remove(pool, "checkin", checkin)
    assert statuses == [200] * count
    assert len(reporter.get("/replicas").json()) == count + 1
    # One for the reports; one more for the feed watcher's poll, should it fall in the burst.
    assert peak <= 2, f"{peak} connections at once for {count} replica reports"


def test_the_audit_trail_names_the_token(secured: RunningRegistry) -> None:
    publisher_secret = make_token(secured, Role.publisher, name="release-bot")
    publisher = secured.client(publisher_secret)
    upload(publisher, "churn", random_bytes())
    events = publisher.get("/audit", params={"model": "churn"}).json()["items"]
    assert [e["action"] for e in events] == ["version.create", "model.create"]
    assert {e["actor"] for e in events} == {
        f"token:{auth.authenticate(secured.db, publisher_secret).token_id}:release-bot"
    }


def _permissions(dependant: Dependant) -> set[str]:
    found = set()
    if (permission := getattr(dependant.call, auth.PERMISSION_ATTRIBUTE, None)) is not None:
        found.add(permission)
    for sub in dependant.dependencies:
        found |= _permissions(sub)
    return found


def test_every_route_declares_exactly_one_permission(tmp_path: Path) -> None:
    """Deny by default: a route added without `Reader`/`Publisher`/`Admin`/`Public` fails here."""
    app = create_app(RegistrySettings(data_dir=tmp_path))
    routes = list(api_routes(app.routes))
    assert len(routes) > 20
    undeclared = []
    for route in routes:
        permissions = _permissions(route.dependant)
        if len(permissions) != 1:
            undeclared.append((sorted(route.methods), route.path, sorted(permissions)))
    assert undeclared == []


def test_mutating_routes_need_more_than_reader(tmp_path: Path) -> None:
    app = create_app(RegistrySettings(data_dir=tmp_path))
    # A replica's heartbeat and goodbye: serving holds no publish rights, so a reader may call
    # them, but only for a replica its own token registered (an admin may also remove one):
    # test_a_replica_id_belongs_to_the_token_that_registered_it.
    readers_may_mutate = {
        ("PUT", "/api/v1/replicas/{replica_id}"),
        ("DELETE", "/api/v1/replicas/{replica_id}"),
    }
    for route in api_routes(app.routes):
        for method in route.methods - {"GET", "HEAD"}:
            permissions = _permissions(route.dependant)
            if (method, route.path) in readers_may_mutate:
                continue
            assert permissions <= {"publisher", "admin"}, (method, route.path, permissions)


@pytest.mark.parametrize(
    ("host", "overrides", "allowed"),
    [
        ("127.0.0.1", {"auth": False}, True),
        ("::1", {"auth": False}, True),
        ("localhost", {"auth": False}, True),
        ("0.0.0.0", {"auth": False}, False),
        ("10.1.2.3", {"auth": False}, False),
        ("0.0.0.0", {"auth": False, "allow_insecure": True}, True),
        ("0.0.0.0", {"auth": True}, True),
    ],
)
def test_no_unauthenticated_registry_beyond_loopback(
    host: str, overrides: dict[str, Any], allowed: bool
) -> None:
    settings = RegistrySettings(**overrides)
    if allowed:
        check_binding(settings, host)
    else:
        with pytest.raises(InsecureBinding, match="BERTH_ALLOW_INSECURE"):
            check_binding(settings, host)


def test_first_start_bootstraps_one_admin_token_in_a_private_file(
    secured: RunningRegistry, tmp_path: Path
) -> None:
    path = tmp_path / "data" / "admin-token"
    secret = auth.bootstrap_admin_token(secured.db, path)
    assert secret is not None
    assert path.read_text().strip() == secret
    assert path.stat().st_mode & 0o777 == 0o600
    admin = secured.client(secret)
    assert admin.get("/tokens").status_code == 200
    # A second start finds tokens and creates nothing.
    assert auth.bootstrap_admin_token(secured.db, tmp_path / "other") is None
    assert not (tmp_path / "other").exists()
    assert len(admin.get("/tokens").json()) == 1


def test_whoami_names_the_caller_and_the_registry_version(secured: RunningRegistry) -> None:
    from registry import __version__

    me = secured.client(make_token(secured, Role.reader, name="viewer")).get("/whoami").json()
    assert me["name"] == "viewer"
    assert me["role"] == "reader"
    assert me["registry_version"] == __version__ != "0+unknown"
