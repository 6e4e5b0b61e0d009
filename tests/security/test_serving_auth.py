"""Serving authenticates predict callers through the registry, without a database."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
from pydantic import ValidationError

from registry.schemas import ReplicaReport, Role
from serving.auth import RegistryTokens
from serving.config import ServingSettings
from serving.errors import RegistryRejected, RegistryUnavailable, Unauthenticated
from serving.registry_client import RegistryClient
from tests.conftest import RunningRegistry
from tests.fixtures.factories import joblib_bytes, linear_model, promote, upload_ok
from tests.fixtures.waiting import eventually
from tests.registry.test_models_api import assert_error
from tests.security.conftest import RunningServing, make_token

ROW = {"inputs": [[0.1, 0.2, 0.3, 0.4]]}


def _predict_ready(serving: RunningServing, token: str) -> Callable[[], bool]:
    def probe() -> bool:
        with serving.client(token) as client:
            return client.post("/models/churn/predict", json=ROW).status_code == 200

    return probe


@pytest.fixture
def stack(
    secured_registry: RunningRegistry, start_serving: Callable[..., RunningServing]
) -> tuple[RunningRegistry, RunningServing, dict[str, str]]:
    registry = secured_registry
    tokens = {role.value: make_token(registry, role)[1] for role in (Role.reader, Role.publisher)}
    tokens["admin"] = make_token(registry, Role.admin)[1]
    tokens["scoped"] = make_token(registry, Role.reader, name="fraud-only", models=["fraud"])[1]
    publisher = registry.client(tokens["publisher"])
    upload_ok(publisher, "churn", joblib_bytes(linear_model()))
    assert promote(publisher, "churn", 1).status_code == 200
    serving = start_serving(
        registry, registry_token=tokens["reader"], auth=True, token_cache_seconds=0.5
    )
    eventually(_predict_ready(serving, tokens["reader"]), within=30)
    return registry, serving, tokens


def test_predict_needs_a_token_the_registry_vouches_for(
    stack: tuple[RunningRegistry, RunningServing, dict[str, str]],
) -> None:
    _, serving, tokens = stack
    with serving.client() as anonymous:
        response = anonymous.post("/models/churn/predict", json=ROW)
        assert_error(response, 401, "unauthenticated")
        assert response.headers["www-authenticate"] == "Bearer"
        assert_error(anonymous.get("/status"), 401, "unauthenticated")
        assert_error(anonymous.get("/metrics"), 401, "unauthenticated")
        assert anonymous.get("/healthz").status_code == 200
    for bad in ("Bearer berth_forged", "Bearer " + "x" * 2000, "Bearer", "Basic dXNlcjpwdw=="):
        with httpx.Client(base_url=serving.url, headers={"Authorization": bad}) as c:
            assert_error(c.post("/models/churn/predict", json=ROW), 401, "unauthenticated")
    for role in ("reader", "publisher", "admin"):
        with serving.client(tokens[role]) as client:
            answer = client.post("/models/churn/predict", json=ROW)
            assert answer.status_code == 200, answer.text
            assert answer.json()["version"] == 1
    with serving.client(tokens["reader"]) as reader:
        assert reader.get("/status").status_code == 200


def test_a_token_scoped_to_other_models_is_refused(
    stack: tuple[RunningRegistry, RunningServing, dict[str, str]],
) -> None:
    _, serving, tokens = stack
    with serving.client(tokens["scoped"]) as client:
        body = assert_error(client.post("/models/churn/predict", json=ROW), 403, "forbidden")
        assert "churn" in str(body["message"])


def test_a_revoked_token_stops_working_within_the_cache_ttl(
    stack: tuple[RunningRegistry, RunningServing, dict[str, str]],
) -> None:
    registry, serving, tokens = stack
    token_id, secret = make_token(registry, Role.reader, name="short-lived")
    with serving.client(secret) as client:
        assert client.post("/models/churn/predict", json=ROW).status_code == 200
        admin = registry.client(tokens["admin"])
        assert admin.delete(f"/tokens/{token_id}").status_code == 200
        time.sleep(0.6)  # token_cache_seconds=0.5
        assert_error(client.post("/models/churn/predict", json=ROW), 401, "unauthenticated")


def test_anonymous_predict_opens_predict_only(
    secured_registry: RunningRegistry, start_serving: Callable[..., RunningServing]
) -> None:
    registry = secured_registry
    reader = make_token(registry, Role.reader)[1]
    publisher = registry.client(make_token(registry, Role.publisher)[1])
    upload_ok(publisher, "churn", joblib_bytes(linear_model()))
    promote(publisher, "churn", 1)
    serving = start_serving(registry, registry_token=reader, auth=True, anonymous_predict=True)
    with serving.client() as anonymous:
        eventually(
            lambda: anonymous.post("/models/churn/predict", json=ROW).status_code == 200, within=30
        )
        assert_error(anonymous.get("/status"), 401, "unauthenticated")


def test_serving_reports_as_its_replica_and_no_other_token_can(
    stack: tuple[RunningRegistry, RunningServing, dict[str, str]],
) -> None:
    """Serving's heartbeat and goodbye work with its reader token, and that token alone."""
    registry, _, tokens = stack
    admin = registry.client(tokens["admin"])

    def serves(revision: int) -> bool:
        replicas = admin.get("/replicas").json()
        return [(r["replica_id"], r["live"], r["serving"]) for r in replicas] == [
            ("replica-0", True, [{"model": "churn", "alias": "production", "revision": revision}])
        ]

    eventually(lambda: serves(1), within=30)
    publisher = registry.client(tokens["publisher"])
    upload_ok(publisher, "churn", joblib_bytes(linear_model(seed=2)))
    assert promote(publisher, "churn", 2).status_code == 200
    rollout = admin.get("/models/churn/aliases/production/rollout", params={"wait": 30}).json()
    assert rollout["converged"] is True

    api = registry.url + "/api/v1"
    intruder = RegistryClient(api, token=make_token(registry, Role.reader)[1], timeout_seconds=5)
    own = RegistryClient(api, token=tokens["reader"], timeout_seconds=5)

    async def calls() -> None:
        try:
            faked = ReplicaReport(position=99)
            with pytest.raises(RegistryRejected, match="registered by another token"):
                await intruder.report("replica-0", faked)
            with pytest.raises(RegistryRejected, match="registered by another token"):
                await intruder.deregister("replica-0")
            await own.deregister("replica-0")
        finally:
            await intruder.aclose()
            await own.aclose()

    asyncio.run(calls())
    # Its own goodbye was not refused (a 403 raises); its next heartbeat registers it again.
    eventually(lambda: serves(2), within=30)


# --- the token cache on its own -------------------------------------------------------------


class FakeWhoami:
    """A registry whose /whoami knows one token; counts calls; can go down."""

    def __init__(self) -> None:
        self.calls = 0
        self.down = False
        self.delay = 0.0

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.down:
            raise httpx.ConnectError("registry down", request=request)
        if request.headers.get("authorization") == "Bearer good":
            return httpx.Response(200, json={"name": "ci", "role": "reader", "models": ["a"]})
        return httpx.Response(401, json={"error": "unauthenticated", "message": "no"})


def _tokens(fake: FakeWhoami, clock: list[float], **kwargs: float) -> RegistryTokens:
    return RegistryTokens(
        "http://registry.test/api/v1",
        timeout_seconds=1,
        ttl_seconds=kwargs.get("ttl", 10),
        stale_seconds=kwargs.get("stale", 60),
        refusal_seconds=kwargs.get("refusal", 2),
        transport=httpx.MockTransport(fake.handle),
        clock=lambda: clock[0],
    )


def test_answers_are_cached_refusals_briefly_and_stale_ones_serve_outages() -> None:
    async def scenario() -> None:
        fake, clock = FakeWhoami(), [0.0]
        tokens = _tokens(fake, clock)
        caller = await tokens.caller("Bearer good")
        assert (caller.name, caller.role, caller.models) == ("ci", Role.reader, frozenset({"a"}))
        await tokens.caller("Bearer good")
        assert fake.calls == 1
        with pytest.raises(Unauthenticated):
            await tokens.caller("Bearer bad")
        with pytest.raises(Unauthenticated):
            await tokens.caller("Bearer bad")
        assert fake.calls == 2  # the refusal was remembered
        clock[0] = 11.0  # past the TTL, the registry is down: a recent answer still counts
        fake.down = True
        assert (await tokens.caller("Bearer good")).name == "ci"
        clock[0] = 100.0  # past the stale window too
        with pytest.raises(RegistryUnavailable):
            await tokens.caller("Bearer good")
        with pytest.raises(Unauthenticated):
            await tokens.caller(None)
        await tokens.aclose()

    asyncio.run(scenario())


def test_an_outage_is_asked_about_once_per_pause_not_once_per_request() -> None:
    async def scenario() -> None:
        fake, clock = FakeWhoami(), [0.0]
        tokens = _tokens(fake, clock, ttl=10, stale=60, refusal=2)
        await tokens.caller("Bearer good")
        fake.down = True
        clock[0] = 11.0
        for _ in range(5):
            assert (await tokens.caller("Bearer good")).name == "ci"
        assert fake.calls == 2, "one failed /whoami, then the stale answer without asking"
        clock[0] = 13.5  # the pause is over: ask again (still down, still the stale answer)
        assert (await tokens.caller("Bearer good")).name == "ci"
        assert fake.calls == 3
        fake.down = False
        clock[0] = 16.0
        await tokens.caller("Bearer good")
        assert fake.calls == 4  # back: a fresh answer, cached for the full TTL again
        clock[0] = 25.0
        await tokens.caller("Bearer good")
        assert fake.calls == 4
        clock[0] = 200.0  # the stale window bounds the outage answer whatever the pauses did
        fake.down = True
        with pytest.raises(RegistryUnavailable):
            await tokens.caller("Bearer good")
        await tokens.aclose()

    asyncio.run(scenario())


def test_concurrent_requests_with_one_new_token_ask_the_registry_once() -> None:
    async def scenario() -> None:
        fake, clock = FakeWhoami(), [0.0]
        fake.delay = 0.05
        tokens = _tokens(fake, clock)
        callers = await asyncio.gather(*(tokens.caller("Bearer good") for _ in range(50)))
        assert {c.name for c in callers} == {"ci"}
        assert fake.calls == 1
        await tokens.aclose()

    asyncio.run(scenario())


def test_the_cache_is_bounded() -> None:
    async def scenario() -> None:
        fake, clock = FakeWhoami(), [0.0]
        tokens = RegistryTokens(
            "http://registry.test/api/v1",
            timeout_seconds=1,
            ttl_seconds=10,
            max_entries=100,
            transport=httpx.MockTransport(fake.handle),
            clock=lambda: clock[0],
        )
        for i in range(500):
            with pytest.raises(Unauthenticated):
                await tokens.caller(f"Bearer forged-{i}")
        assert len(tokens._entries) == 100
        await tokens.aclose()

    asyncio.run(scenario())


def test_predictions_still_match_the_model(
    stack: tuple[RunningRegistry, RunningServing, dict[str, str]],
) -> None:
    _, serving, tokens = stack
    model = linear_model()
    with serving.client(tokens["reader"]) as client:
        answer = client.post("/models/churn/predict", json=ROW).json()
    np.testing.assert_allclose(answer["predictions"], model.predict(np.array(ROW["inputs"])))


def test_serving_reads_its_registry_token_from_a_mounted_file(
    secured_registry: RunningRegistry,
    start_serving: Callable[..., RunningServing],
    tmp_path: Path,
) -> None:
    # A Kubernetes Secret mounted as a file: the token never enters the environment.
    registry = secured_registry
    _, reader = make_token(registry, Role.reader)
    _, publisher = make_token(registry, Role.publisher)
    upload_ok(registry.client(publisher), "churn", joblib_bytes(linear_model()))
    assert promote(registry.client(publisher), "churn", 1).status_code == 200
    token_file = tmp_path / "registry-token"
    token_file.write_text(reader + "\n")
    serving = start_serving(registry, registry_token_file=token_file, auth=True)
    # Routing and loading both call the secured registry: an answer proves the file was used.
    eventually(_predict_ready(serving, reader), within=30)


def test_token_file_settings_are_checked_at_start(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("  abc  \n")
    assert ServingSettings(registry_token_file=token_file).bearer_token() == "abc"
    assert ServingSettings().bearer_token() is None
    with pytest.raises(ValidationError, match="not both"):
        ServingSettings(registry_token="x", registry_token_file=token_file)
    with pytest.raises(ValueError, match="cannot read"):
        ServingSettings(registry_token_file=tmp_path / "missing").bearer_token()
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        ServingSettings(registry_token_file=tmp_path / "empty").bearer_token()
