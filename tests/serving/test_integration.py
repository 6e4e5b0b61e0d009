"""Serving replicas as processes against the real registry as a process, on Postgres and SQLite.

Every process is started by a fixture and stopped in its finaliser. Deadlines are the issue's
own (every replica serves a promotion within 1 s on Postgres, within the feed's poll interval
plus 1 s on SQLite); everything else polls with generous deadlines.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from registry.db import Database
from registry.schemas import AliasUpdate
from registry.service import RegistryService
from registry.storage import open_store
from tests.conftest import Backend
from tests.fixtures.factories import upload_ok
from tests.fixtures.servers import REPO_ROOT, ServiceProcess, free_port
from tests.serving.conftest import eventually
from tests.serving.factories import artifact, metadata, regressor, row

pytestmark = pytest.mark.slow

FEED_POLL_SECONDS = 1.0


def rollout_deadline(backend: Backend) -> float:
    """The issue's bound: 1 s on Postgres; on SQLite the feed's poll interval plus 1 s."""
    return 1.0 if backend.is_postgres else FEED_POLL_SECONDS + 1.0


@dataclass
class Registry:
    """The registry as a child process; `restart` brings it back on the same port."""

    backend: Backend
    env: dict[str, str]
    log: Path
    port: int = field(default_factory=free_port)
    process: ServiceProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = ServiceProcess(
            ["registry", "serve"], env=self.env, port=self.port, log_path=self.log
        ).start()

    def stop(self) -> None:
        """SIGTERM: uvicorn's graceful shutdown (it waits up to 5 s for open long-polls)."""
        if self.process is not None:
            self.process.stop()

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.url + "/api/v1", timeout=30)


@pytest.fixture
def registry(backend: Backend, tmp_path: Path) -> Iterator[Registry]:
    env = {
        "BERTH_DATABASE_URL": backend.database_url,
        "BERTH_ARTIFACT_STORE": backend.store_url,
        "BERTH_DATA_DIR": str(tmp_path / "registry"),
        "BERTH_AUTH": "false",
        "BERTH_FEED_POLL_SECONDS": str(FEED_POLL_SECONDS),
        "BERTH_REPLICA_TTL_SECONDS": "5",
    }
    subprocess.run(
        [sys.executable, "-m", "registry", "db", "upgrade"],
        env={**os.environ, **env},
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
    )
    running = Registry(backend, env, tmp_path / "registry.log")
    running.start()
    try:
        yield running
    finally:
        # Killed, not stopped: a graceful stop would wait out long-polls that have no client.
        running.kill()


@dataclass
class Replica:
    replica_id: str
    process: ServiceProcess

    @property
    def url(self) -> str:
        return self.process.url

    def predict(self, client: httpx.Client, routing_key: str | None = None) -> httpx.Response:
        headers = {"X-Routing-Key": routing_key} if routing_key else {}
        return client.post(
            self.url + "/models/churn/predict", json={"inputs": [row()]}, headers=headers
        )

    def version(self, client: httpx.Client, routing_key: str | None = None) -> int:
        response = self.predict(client, routing_key)
        assert response.status_code == 200, response.text
        version: int = response.json()["version"]
        return version

    def status(self, client: httpx.Client) -> dict[str, Any]:
        found: dict[str, Any] = client.get(self.url + "/status").json()
        return found

    def ready(self, client: httpx.Client) -> bool:
        return client.get(self.url + "/readyz").status_code == 200

    def failures(self, client: httpx.Client) -> list[dict[str, Any]]:
        failures: list[dict[str, Any]] = self.status(client)["failures"]
        return failures

    def disconnected(self, client: httpx.Client) -> bool:
        return not self.status(client)["feed"]["connected"]

    def serves(self, client: httpx.Client, version: int) -> bool:
        return self.version(client) == version


@pytest.fixture
def start_replicas(registry: Registry, tmp_path: Path) -> Iterator[Callable[[int], list[Replica]]]:
    started: list[ServiceProcess] = []

    def start(count: int) -> list[Replica]:
        replicas = []
        for _ in range(count):
            replica_id = f"replica-{len(started)}"
            process = ServiceProcess(
                ["serving"],
                env={
                    "BERTH_REGISTRY_URL": registry.url,
                    "BERTH_REPLICA_ID": replica_id,
                    "BERTH_AUTH": "false",
                    "BERTH_FEED_WAIT_SECONDS": "20",
                    "BERTH_HEARTBEAT_SECONDS": "1",
                    "BERTH_BACKOFF_MIN_SECONDS": "0.1",
                    "BERTH_BACKOFF_MAX_SECONDS": "1",
                },
                log_path=tmp_path / f"{replica_id}.log",
            )
            started.append(process)
            replicas.append(Replica(replica_id, process))
        for replica in replicas:
            replica.process.start(timeout=60)
        with httpx.Client(timeout=10) as client:
            for replica in replicas:
                eventually(partial(replica.ready, client), within=30)
        return replicas

    yield start
    for process in started:
        process.stop()


def push(api: httpx.Client, *, offset: float, tamper: float = 0.0) -> int:
    estimator = regressor(offset=offset)
    meta = metadata(estimator, tamper=tamper).model_dump(mode="json", exclude_none=True)
    version: int = upload_ok(api, "churn", artifact(estimator), metadata=meta)["version"]
    return version


def promote(api: httpx.Client, version: int) -> int:
    response = api.put("/models/churn/aliases/production", json={"version": version})
    assert response.status_code == 200, response.text
    revision: int = response.json()["revision"]
    return revision


class LoadGenerator:
    """One thread per replica sending predicts back to back; records every outcome."""

    def __init__(self, replicas: list[Replica]) -> None:
        self._replicas = replicas
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(r,)) for r in replicas]
        self.outcomes: Counter[tuple[str, int | str]] = Counter()
        self.lock = threading.Lock()

    def _run(self, replica: Replica) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                try:
                    response = replica.predict(client)
                    outcome: int | str = (
                        response.json()["version"]
                        if response.status_code == 200
                        else f"{response.status_code} {response.text[:200]}"
                    )
                except httpx.HTTPError as exc:
                    outcome = f"{type(exc).__name__}: {exc}"
                with self.lock:
                    self.outcomes[(replica.replica_id, outcome)] += 1

    def __enter__(self) -> LoadGenerator:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def answers(self) -> Counter[int | str]:
        with self.lock:
            totals: Counter[int | str] = Counter()
            for (_, outcome), count in self.outcomes.items():
                totals[outcome] += count
            return totals


def switch_times(replicas: list[Replica], version: int, since: float, limit: float) -> list[float]:
    """Seconds from `since` until each replica first answers with `version` (polled fast)."""
    times: dict[str, float] = {}
    with httpx.Client(timeout=10) as client:
        while len(times) < len(replicas) and time.monotonic() - since < limit + 5:
            for replica in replicas:
                if replica.replica_id not in times and replica.version(client) == version:
                    times[replica.replica_id] = time.monotonic() - since
            time.sleep(0.01)
    assert len(times) == len(replicas), f"replicas never switched to v{version}: {times}"
    return list(times.values())


def test_promotion_and_rollback_reach_every_replica_with_zero_failed_requests(
    backend: Backend, registry: Registry, start_replicas: Callable[[int], list[Replica]]
) -> None:
    with registry.api() as api:
        assert push(api, offset=1) == 1
        assert push(api, offset=2) == 2
        promote(api, 1)
        replicas = start_replicas(3 if backend.is_postgres else 2)
        deadline = rollout_deadline(backend)
        with LoadGenerator(replicas) as load:
            time.sleep(0.5)
            revision = promote(api, 2)
            promoted = time.monotonic()
            took = switch_times(replicas, 2, promoted, deadline)
            assert max(took) <= deadline, f"v2 reached the replicas after {took} s"
            rollout = api.get(
                "/models/churn/aliases/production/rollout",
                params={"revision": revision, "wait": 10},
            ).json()
            assert rollout["converged"], rollout
            assert {r["replica_id"] for r in rollout["replicas"]} == {
                r.replica_id for r in replicas
            }

            response = api.post("/models/churn/aliases/production/rollback", json={})
            assert response.status_code == 200, response.text
            rolled_back = time.monotonic()
            took = switch_times(replicas, 1, rolled_back, deadline)
            assert max(took) <= deadline, f"the rollback reached the replicas after {took} s"

            # A 90/10 split: every replica sends each routing key to the same version.
            response = api.put(
                "/models/churn/aliases/production",
                json={"variants": [{"version": 1, "weight": 90}, {"version": 2, "weight": 10}]},
            )
            assert response.status_code == 200, response.text
            split = api.get(
                "/models/churn/aliases/production/rollout",
                params={"revision": response.json()["revision"], "wait": 10},
            ).json()
            assert split["converged"], split
            keys = [f"user-{i}" for i in range(2000)]
            with httpx.Client(timeout=10) as client:
                routed = [
                    [replica.version(client, routing_key=key) for key in keys]
                    for replica in replicas
                ]
            assert all(answers == routed[0] for answers in routed[1:])
            assert routed[0].count(2) / len(keys) == pytest.approx(0.10, abs=0.015)
        answers = load.answers()
    assert set(answers) <= {1, 2}, f"failed or unexpected answers: {answers}"
    assert answers[1] > 20
    assert answers[2] > 0


@pytest.mark.parametrize("defect", ["corrupted artifact", "example does not reproduce"])
def test_a_broken_version_never_takes_effect_on_serving(
    backend: Backend,
    registry: Registry,
    start_replicas: Callable[[int], list[Replica]],
    defect: str,
) -> None:
    with registry.api() as api:
        push(api, offset=1)
        promote(api, 1)
        if defect == "corrupted artifact":
            bad = push(api, offset=2)
            corrupt_blob(backend, api.get(f"/models/churn/versions/{bad}").json()["sha256"])
            stage = "digest"
        else:
            bad = push(api, offset=2, tamper=0.25)
            stage = "example"
        replicas = start_replicas(2)
        with LoadGenerator(replicas) as load:
            revision = promote(api, bad)
            with httpx.Client(timeout=10) as client:
                for replica in replicas:
                    failures = eventually(partial(replica.failures, client), within=30)
                    assert [(f["version"], f["stage"]) for f in failures] == [(bad, stage)]
            rollout = api.get(
                "/models/churn/aliases/production/rollout",
                params={"revision": revision, "wait": 2},
            ).json()
            assert not rollout["converged"]
            assert all(r["revision"] == 1 for r in rollout["replicas"])
            reported = eventually(
                lambda: all(
                    r["failures"]
                    for r in api.get("/replicas").json()
                    if r["replica_id"].startswith("replica-")
                ),
                within=10,
            )
            assert reported
            time.sleep(1.0)
        answers = load.answers()
    assert set(answers) == {1}, f"the broken v{bad} answered or requests failed: {answers}"
    assert answers[1] > 20


def test_registry_outage_serving_answers_then_catches_up_on_a_change_it_was_not_told_of(
    backend: Backend, registry: Registry, start_replicas: Callable[[int], list[Replica]]
) -> None:
    with registry.api() as api:
        push(api, offset=1)
        push(api, offset=2)
        promote(api, 1)
    replicas = start_replicas(2)
    with LoadGenerator(replicas) as load, httpx.Client(timeout=10) as client:
        time.sleep(0.3)
        registry.stop()
        for replica in replicas:
            eventually(partial(replica.disconnected, client), within=30)
        before = load.answers()
        time.sleep(1.0)
        assert sum(load.answers().values()) > sum(before.values()), "serving stopped answering"

        # A promotion committed with no registry process running: nobody is notified of it.
        database = Database(backend.database_url)
        try:
            with database.transaction() as session:
                RegistryService(session, actor="test").set_alias(
                    "churn", "production", AliasUpdate(version=2), if_match=None
                )
        finally:
            database.dispose()
        time.sleep(0.5)
        assert all(r.version(client) == 1 for r in replicas)

        registry.start()
        for replica in replicas:
            eventually(partial(replica.serves, client, 2), within=30)
            status = replica.status(client)
            assert status["feed"]["connected"]
            assert status["feed"]["position"] == 2
    answers = load.answers()
    assert set(answers) <= {1, 2}, f"requests failed during the outage: {answers}"


def corrupt_blob(backend: Backend, digest: str) -> None:
    """Change the stored bytes of an object after upload, as disk rot or a bad actor would."""
    store = open_store(backend.store_url)
    local = store.local_path(digest)
    if local is not None:
        data = bytearray(local.read_bytes())
        data[len(data) // 2] ^= 0xFF
        local.write_bytes(bytes(data))
        return
    bucket = backend.store_url.removeprefix("s3://").split("/", 1)[0]
    s3 = boto3.client("s3")
    keys = [
        o["Key"]
        for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])
        if o["Key"].endswith(digest)
    ]
    assert len(keys) == 1, keys
    data = bytearray(s3.get_object(Bucket=bucket, Key=keys[0])["Body"].read())
    data[len(data) // 2] ^= 0xFF
    s3.put_object(Bucket=bucket, Key=keys[0], Body=bytes(data))
