"""Concurrent writers: exact outcomes, no errors, no gaps. Every writer waits at a barrier."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import event

from tests.conftest import Backend, RunningRegistry, make_settings, run_registry
from tests.fixtures.factories import random_bytes, upload, upload_ok


def run_together(count: int, work: Callable[[int, httpx.Client], Any], url: str) -> list[Any]:
    """Run `work(i, client)` in `count` threads released at once; return results in order."""
    barrier = threading.Barrier(count)

    def task(index: int) -> Any:
        with httpx.Client(base_url=url + "/api/v1", timeout=60) as client:
            barrier.wait()
            return work(index, client)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(task, range(count)))


def test_sixteen_parallel_uploads_get_versions_one_to_sixteen(registry: RunningRegistry) -> None:
    responses = run_together(
        16, lambda i, c: upload(c, "churn", random_bytes(20_000 + i)), registry.url
    )
    assert [r.status_code for r in responses] == [201] * 16, [
        r.text for r in responses if r.status_code != 201
    ]
    assert sorted(r.json()["version"] for r in responses) == list(range(1, 17))
    listed = registry.api.get("/models/churn/versions", params={"limit": 100}).json()["items"]
    assert [v["version"] for v in listed] == list(range(16, 0, -1))
    assert registry.api.get("/models/churn").json()["latest_version"] == 16


def test_eight_writers_times_fifty_changes_give_a_gap_free_chain_seen_whole_by_the_feed(
    registry: RunningRegistry,
) -> None:
    for _ in range(4):
        upload_ok(registry.api, "churn")
    seen: list[dict[str, Any]] = []
    stop = threading.Event()

    def consume() -> None:
        position = 0
        with httpx.Client(base_url=registry.url + "/api/v1", timeout=30) as client:
            while not stop.is_set() or position < 400:
                body = client.get("/changes", params={"after": position, "wait": 2}).json()
                seen.extend(body["changes"])
                position = body["position"]
                if stop.is_set() and not body["changes"]:
                    break

    consumer = threading.Thread(target=consume)
    consumer.start()

    def write(index: int, client: httpx.Client) -> list[int]:
        statuses = []
        for n in range(50):
            body = {"version": (index + n) % 4 + 1, "reason": f"writer {index} change {n}"}
            statuses.append(client.put("/models/churn/aliases/production", json=body).status_code)
        return statuses

    results = run_together(8, write, registry.url)
    stop.set()
    consumer.join(timeout=60)
    assert [s for statuses in results for s in statuses] == [200] * 400

    revisions: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 1000} | ({"cursor": cursor} if cursor else {})
        page = registry.api.get("/models/churn/aliases/production/history", params=params).json()
        revisions += [h["revision"] for h in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert revisions == list(range(400, 0, -1))
    assert [c["seq"] for c in seen] == list(range(1, 401)), "the feed skipped or repeated a change"
    assert [c["revision"] for c in seen] == list(range(1, 401))


def test_promotions_on_many_models_at_once_never_skip_a_feed_position(
    registry: RunningRegistry,
) -> None:
    # Different models share no row lock, so only the feed counter orders these commits.
    for model in range(8):
        upload_ok(registry.api, f"m{model}")
    positions: list[int] = []
    stop = threading.Event()

    def consume() -> None:
        position = 0
        with httpx.Client(base_url=registry.url + "/api/v1", timeout=30) as client:
            while True:
                body = client.get("/changes", params={"after": position, "wait": 1}).json()
                positions.extend(c["seq"] for c in body["changes"])
                position = body["position"]
                if stop.is_set() and position >= 240:
                    return

    consumer = threading.Thread(target=consume)
    consumer.start()
    results = run_together(
        8,
        lambda i, c: [
            c.put(f"/models/m{i}/aliases/production", json={"version": 1}).status_code
            for _ in range(30)
        ],
        registry.url,
    )
    stop.set()
    consumer.join(timeout=60)
    assert all(status == 200 for statuses in results for status in statuses)
    assert positions == list(range(1, 241))


def test_two_if_match_writers_racing_get_one_200_and_one_409(registry: RunningRegistry) -> None:
    upload_ok(registry.api, "churn")
    upload_ok(registry.api, "churn")
    for round_ in range(10):
        current = registry.api.get("/models/churn/aliases/production")
        revision = current.json()["revision"] if current.status_code == 200 else 0
        statuses = run_together(
            2,
            lambda i, c, r=revision, n=round_: (
                c.put(
                    "/models/churn/aliases/production",
                    json={"version": i + 1, "reason": f"round {n}"},
                    headers={"If-Match": str(r)},
                ).status_code
            ),
            registry.url,
        )
        assert sorted(statuses) == [200, 409], f"round {round_}: {statuses}"
    assert registry.api.get("/models/churn/aliases/production").json()["revision"] == 10


def test_the_connection_pool_bound_holds_under_a_burst(
    postgres_backend: Backend, tmp_path: Path
) -> None:
    # What a registry process asks of Postgres is set by its pool, not by how many replicas
    # call it: past the bound, requests wait for a free connection instead of opening more.
    settings = make_settings(
        postgres_backend, tmp_path, database_pool_size=2, database_max_overflow=0
    )
    opened: list[object] = []
    with contextlib.ExitStack() as stack:
        registry = stack.enter_context(contextlib.contextmanager(run_registry)(settings))

        def on_connect(connection: object, _record: object) -> None:
            opened.append(connection)

        event.listen(registry.app.state.db.engine, "connect", on_connect)
        upload_ok(registry.api, "churn", random_bytes(64))

        def read(_: int) -> int:
            with httpx.Client(base_url=registry.url + "/api/v1", timeout=30) as client:
                return client.get("/models/churn/versions").status_code

        with ThreadPoolExecutor(max_workers=24) as pool:
            codes = list(pool.map(read, range(96)))
    assert codes == [200] * 96
    assert 1 <= len(opened) <= 2
