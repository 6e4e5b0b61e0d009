"""The change feed: snapshot, ordered changes, long-poll wake-ups from every source."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from registry.feed import SharedReads
from registry.service import RegistryService
from tests.conftest import Backend, RunningRegistry, make_settings, run_registry
from tests.fixtures.factories import promote, upload_ok
from tests.serving.conftest import eventually


def seed(api: httpx.Client, model: str = "churn", versions: int = 2) -> None:
    for _ in range(versions):
        upload_ok(api, model)


def test_routing_snapshot_lists_live_aliases_and_the_position(api: httpx.Client) -> None:
    seed(api)
    promote(api, "churn", 1)
    promote(api, "churn", 2, alias="staging")
    api.put("/models/churn/aliases/canary", json={"variants": [{"version": 1, "weight": 1}]})
    api.delete("/models/churn/aliases/canary")
    snapshot = api.get("/routing").json()
    assert snapshot["position"] == 4
    entries = {(a["model"], a["alias"]): a for a in snapshot["aliases"]}
    assert set(entries) == {("churn", "production"), ("churn", "staging")}
    assert entries[("churn", "staging")]["variants"] == [{"version": 2, "weight": 100}]
    assert entries[("churn", "production")]["revision"] == 1


def test_changes_come_in_order_from_any_position(api: httpx.Client) -> None:
    seed(api)
    for version in (1, 2, 1):
        promote(api, "churn", version)
    api.delete("/models/churn/aliases/production")
    everything = api.get("/changes", params={"after": 0}).json()
    assert [c["seq"] for c in everything["changes"]] == [1, 2, 3, 4]
    assert everything["position"] == 4
    assert everything["changes"][-1]["deleted"] is True
    assert [c["revision"] for c in everything["changes"]] == [1, 2, 3, 4]
    tail = api.get("/changes", params={"after": 2, "limit": 1}).json()
    assert [c["seq"] for c in tail["changes"]] == [3]
    assert tail["position"] == 3
    empty = api.get("/changes", params={"after": 4}).json()
    assert empty == {"changes": [], "position": 4, "head": 4}


def long_poll(url: str, after: int, wait: float, out: dict[str, Any]) -> None:
    started = time.monotonic()
    body = httpx.get(
        f"{url}/api/v1/changes", params={"after": after, "wait": wait}, timeout=wait + 10
    ).json()
    out["elapsed"] = time.monotonic() - started
    out["body"] = body


def start_long_poll(url: str, after: int, wait: float) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}
    thread = threading.Thread(target=long_poll, args=(url, after, wait, out))
    thread.start()
    time.sleep(0.3)  # let it park on the server
    return thread, out


def test_a_long_poll_returns_empty_when_nothing_happens(registry: RunningRegistry) -> None:
    thread, out = start_long_poll(registry.url, 0, 1.0)
    thread.join()
    assert out["body"] == {"changes": [], "position": 0, "head": 0}
    assert out["elapsed"] >= 0.9


def test_a_commit_in_this_process_wakes_a_waiter_at_once(registry: RunningRegistry) -> None:
    seed(registry.api)
    thread, out = start_long_poll(registry.url, 0, 20)
    promote(registry.api, "churn", 1)
    thread.join(timeout=25)
    assert [c["seq"] for c in out["body"]["changes"]] == [1]
    assert out["elapsed"] < 5, "woken by the commit, not by the 20 s timeout"


@pytest.fixture
def two_registries_without_polling(
    postgres_backend: Backend, tmp_path: Path
) -> Iterator[tuple[RunningRegistry, RunningRegistry]]:
    # A 60 s poll: within the test's bounds only a NOTIFY can wake the other process's waiters.
    settings = make_settings(postgres_backend, tmp_path, feed_poll_seconds=60)
    for first in run_registry(settings):
        for second in run_registry(settings):
            yield first, second


def test_notify_wakes_waiters_of_another_registry_process(
    two_registries_without_polling: tuple[RunningRegistry, RunningRegistry],
) -> None:
    waiter_side, writer_side = two_registries_without_polling
    seed(writer_side.api)
    time.sleep(0.5)  # both watchers are LISTENing
    thread, out = start_long_poll(waiter_side.url, 0, 30)
    promote(writer_side.api, "churn", 1)
    thread.join(timeout=35)
    assert [c["seq"] for c in out["body"]["changes"]] == [1]
    assert out["elapsed"] < 5, "woken by NOTIFY, not by the 60 s poll or the 30 s timeout"


def test_polling_catches_changes_from_another_process_on_sqlite(
    sqlite_url: str, tmp_path: Path
) -> None:
    backend = Backend("sqlite+file", sqlite_url, (tmp_path / "artifacts").as_uri())
    settings = make_settings(backend, tmp_path, feed_poll_seconds=0.3)
    for waiter_side in run_registry(settings):
        for writer_side in run_registry(settings):
            seed(writer_side.api)
            thread, out = start_long_poll(waiter_side.url, 0, 20)
            promote(writer_side.api, "churn", 1)
            thread.join(timeout=25)
            assert [c["seq"] for c in out["body"]["changes"]] == [1]
            assert out["elapsed"] < 3, "caught by the 0.3 s poll"


def test_waiting_requests_hold_no_worker_thread(registry: RunningRegistry) -> None:
    # More parked long-polls than the worker thread pool has threads (40 by default).
    outs: list[dict[str, Any]] = []
    threads = []
    for _ in range(60):
        out: dict[str, Any] = {}
        thread = threading.Thread(target=long_poll, args=(registry.url, 0, 8, out))
        thread.start()
        threads.append(thread)
        outs.append(out)
    time.sleep(1.0)
    started = time.monotonic()
    response = registry.api.get("/models")
    assert response.status_code == 200
    assert time.monotonic() - started < 2, "a sync handler still found a free worker thread"
    seed(registry.api)
    promote(registry.api, "churn", 1)
    for thread in threads:
        thread.join(timeout=15)
    assert all(o["body"]["changes"][0]["seq"] == 1 for o in outs)


def test_the_feed_reports_its_head_and_refuses_positions_past_it(api: httpx.Client) -> None:
    seed(api)
    promote(api, "churn", 1)
    promote(api, "churn", 2)
    assert api.get("/changes", params={"after": 1, "limit": 1}).json()["head"] == 2
    ahead = api.get("/changes", params={"after": 9})
    assert ahead.status_code == 400
    assert ahead.json()["error"] == "invalid_cursor"
    assert "/api/v1/routing" in ahead.json()["message"]


def test_a_long_poll_ends_when_its_client_hangs_up(registry: RunningRegistry) -> None:
    signal = registry.app.state.feed_signal
    with (
        httpx.Client(base_url=registry.url + "/api/v1", timeout=1) as impatient,
        pytest.raises(httpx.ReadTimeout),
    ):
        impatient.get("/changes", params={"after": 0, "wait": 60})
    # The handler noticed the hang-up and stopped waiting, rather than for the full 60 s.
    deadline = time.monotonic() + 5
    while signal.waiters and time.monotonic() < deadline:
        time.sleep(0.05)
    assert signal.waiters == 0


def test_a_replica_that_leaves_stops_counting_for_rollouts(api: httpx.Client) -> None:
    seed(api)
    promote(api, "churn", 1)
    report = {"position": 1, "serving": [{"model": "churn", "alias": "production", "revision": 1}]}
    assert api.put("/replicas/r1", json=report).status_code == 200
    assert api.put("/replicas/r2", json=report | {"serving": []}).status_code == 200
    assert api.get("/models/churn/aliases/production/rollout").json()["converged"] is False
    assert api.delete("/replicas/r2").status_code == 204
    assert api.get("/models/churn/aliases/production/rollout").json()["converged"] is True
    assert api.delete("/replicas/r2").status_code == 404


def test_one_promotion_wakes_every_replica_with_one_database_read(
    registry: RunningRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without sharing, each woken long-poll would take a pooled connection for the same query:
    # database work and connections would grow with the number of serving replicas.
    reads: list[int] = []
    original = RegistryService.changes

    def counting(self: RegistryService, after: int, limit: int) -> Any:
        reads.append(after)
        return original(self, after, limit)

    seed(registry.api)
    outs: list[dict[str, Any]] = [{} for _ in range(30)]
    threads = [threading.Thread(target=long_poll, args=(registry.url, 0, 10, out)) for out in outs]
    for thread in threads:
        thread.start()
    eventually(lambda: registry.app.state.feed_signal.waiters == len(threads))
    monkeypatch.setattr(RegistryService, "changes", counting)
    promote(registry.api, "churn", 1)
    for thread in threads:
        thread.join(timeout=15)
    assert all(o["body"]["changes"][0]["seq"] == 1 for o in outs)
    assert 1 <= len(reads) <= 2, f"{len(reads)} reads for {len(threads)} woken replicas"


def test_shared_reads_run_once_per_key_and_never_serve_a_finished_read() -> None:
    asyncio.run(_shared_reads_run_once())


async def _shared_reads_run_once() -> None:
    calls: list[str] = []
    release = asyncio.Event()

    async def fetch(label: str) -> str:
        calls.append(label)
        await release.wait()
        return f"{label}-{len(calls)}"

    shared: SharedReads[str] = SharedReads()
    together = [asyncio.ensure_future(shared.read("a", partial(fetch, "a"))) for _ in range(5)]
    other = asyncio.ensure_future(shared.read("b", partial(fetch, "b")))
    await asyncio.sleep(0)
    together[0].cancel()  # one reader leaving must not cancel the read the others wait on
    release.set()
    answers = [await t for t in together[1:]]
    assert len(answers) == 4
    assert len(set(answers)) == 1
    assert (await other).startswith("b-")
    assert sorted(calls) == ["a", "b"]
    assert await shared.read("a", partial(fetch, "a")) == "a-3", "a finished read is not reused"
    assert shared.in_flight == 0


def test_a_failed_shared_read_fails_every_reader_then_is_forgotten() -> None:
    asyncio.run(_failed_shared_read())


async def _failed_shared_read() -> None:
    async def broken() -> str:
        await asyncio.sleep(0)
        raise RuntimeError("database gone")

    async def fine() -> str:
        return "ok"

    shared: SharedReads[str] = SharedReads()
    results = await asyncio.gather(
        *(shared.read("k", broken) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, RuntimeError) for r in results)
    assert await shared.read("k", fine) == "ok"


@pytest.mark.parametrize(
    ("method", "path", "params", "body"),
    [
        ("GET", "/changes", {"after": 2**63}, None),
        ("GET", "/models/churn/aliases/production/rollout", {"revision": 2**31}, None),
        ("POST", "/models/churn/aliases/production/rollback", {}, {"to_revision": 2**31}),
        ("POST", "/models/churn/aliases/production/rollback", {}, {"to_revision": 10**30}),
    ],
)
def test_numbers_past_what_the_database_stores_are_422_not_a_crash(
    api: httpx.Client, method: str, path: str, params: dict[str, int], body: Any
) -> None:
    # Found by `make fuzz`: a feed position past 64 bits overflowed SQLite's INTEGER (a 500).
    seed(api)
    promote(api, "churn", 1)
    response = api.request(method, path, params=params, json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_request"
