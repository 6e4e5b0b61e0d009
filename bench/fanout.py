"""Benchmark: a promotion's fan-out to 20 serving processes behind 2 registries (not a test).

Starts 2 `python -m registry serve` processes on one fresh Postgres database (artifacts in a
local directory both share), then serving processes (`python -m serving`, half following each
registry) in three stages: 2, 10 and 20. In each stage it promotes a new version of one model,
alternating the registry the promotion is made through, and times, for every promotion, the span
from the promote call returning to the moment the last serving process answers a predict with
the new version (each process polled every few milliseconds, all at once). Between promotions
it samples the database's connections (`pg_stat_activity`), to show that they are bounded by the
registries' pools and do not grow with serving processes: serving talks only to a registry, over
HTTP, and a promotion's wake-up costs each registry one feed query however many replicas wait.
Authentication is on, as in production: the bench calls the registries with an admin token and
every serving process reaches its registry with a reader token, so each long-poll and heartbeat
is a token check too. The registries' pools are `--pool-size` and `--max-overflow` (default 4 and
0, a hard cap as an operator budgeting Postgres connections would set; the settings' own defaults
are 10 and 20): 2 x (pool + overflow + 1 LISTEN) connections at most.

Target (issue 8): p99 <= 1 s over the 20 promotions of the 20-process stage.
Writes bench/results/fanout.json and exits 1 if the target is missed.

    make bench-fanout     # or: .venv/bin/python bench/fanout.py [--no-isolation] [--output F]
                          #     [--pool-size N --max-overflow N]

The isolated loader (the default, BERTH_LOAD_ISOLATION=true) loads each version twice, once in a
child process; --no-isolation shows what that costs when 20 processes load at once on few cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
from sqlalchemy.engine import make_url

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from harness import mint_token, percentile  # noqa: E402

from tests.fixtures.databases import (  # noqa: E402
    create_database,
    drop_database,
    libpq_url,
    postgres_server_url,
)
from tests.fixtures.factories import upload_ok  # noqa: E402
from tests.fixtures.servers import ServiceProcess  # noqa: E402
from tests.serving.factories import artifact, metadata, regressor, row  # noqa: E402

P99_TARGET_SECONDS = 1.0
STAGES = ((2, 6), (10, 6), (20, 20))
"""(serving processes, promotions) per stage; the last is the issue's measurement."""
POLL_SECONDS = 0.025
"""Each process polled 40 times a second: finer polling would load the 2 shared cores more
than it would sharpen the figure."""
MODEL = "churn"
REGISTRIES = 2


@dataclass
class Stage:
    serving: int
    seconds: list[float]
    through: list[int]
    connections: list[int]

    def summary(self) -> dict[str, Any]:
        return {
            "serving_processes": self.serving,
            "promotions": len(self.seconds),
            "p50_seconds": round(statistics.median(self.seconds), 4),
            "p99_seconds": round(percentile(self.seconds, 99), 4),
            "max_seconds": round(max(self.seconds), 4),
            "per_promotion_seconds": [round(s, 4) for s in self.seconds],
            "promoted_through_registry": self.through,
            "postgres_connections_max": max(self.connections),
            "postgres_connections_samples": self.connections,
        }


def connections(database_url: str) -> int:
    url = make_url(database_url)
    maintenance = url.set(database="postgres").render_as_string(False)
    with psycopg.connect(libpq_url(maintenance)) as conn:
        found = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (url.database,)
        ).fetchone()
    assert found is not None
    return int(found[0])


@dataclass(frozen=True)
class Pool:
    size: int
    max_overflow: int


@contextmanager
def registries(
    database_url: str, artifacts: Path, logs: Path, pool: Pool
) -> Iterator[list[ServiceProcess]]:
    env = {
        "BERTH_DATABASE_URL": database_url,
        "BERTH_ARTIFACT_STORE": artifacts.as_uri(),
        "BERTH_DATA_DIR": str(logs),
        "BERTH_AUTH": "true",
        "BERTH_REPLICA_TTL_SECONDS": "15",
        "BERTH_DATABASE_POOL_SIZE": str(pool.size),
        "BERTH_DATABASE_MAX_OVERFLOW": str(pool.max_overflow),
    }
    processes = [
        ServiceProcess(["registry", "serve"], env=env, log_path=logs / f"registry-{i}.log")
        for i in range(REGISTRIES)
    ]
    try:
        for process in processes:
            process.start(timeout=60)
        yield processes
    finally:
        # Killed: a graceful stop would wait out the serving processes' long-polls.
        for process in processes:
            process.kill()


def start_serving(
    registry_urls: list[str], first: int, count: int, logs: Path, isolation: bool, token: str
) -> list[ServiceProcess]:
    processes = [
        ServiceProcess(
            ["serving"],
            env={
                # Half follow each registry: a promotion made through one must reach both halves.
                "BERTH_REGISTRY_URL": registry_urls[i % 2],
                "BERTH_REPLICA_ID": f"serving-{i}",
                "BERTH_REGISTRY_TOKEN": token,
                # Open to the bench's own predict polling; its calls to the registry still
                # carry the reader token.
                "BERTH_AUTH": "false",
                "BERTH_LOAD_ISOLATION": "true" if isolation else "false",
                "BERTH_LOG_LEVEL": "warning",
            },
            log_path=logs / f"serving-{i}.log",
        )
        for i in range(first, first + count)
    ]
    with ThreadPoolExecutor(max_workers=count) as pool:
        list(pool.map(lambda p: p.start(timeout=180), processes))
    return processes


async def until_all_serve(urls: list[str], version: int, within: float) -> float:
    """Seconds until every URL answers a predict with `version`."""
    started = time.monotonic()

    async def one(client: httpx.AsyncClient, url: str) -> None:
        while time.monotonic() - started < within:
            try:
                response = await client.post(
                    f"{url}/models/{MODEL}/predict", json={"inputs": [row()]}
                )
                if response.status_code == 200 and response.json()["version"] == version:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(POLL_SECONDS)
        raise TimeoutError(f"{url} did not serve version {version} within {within} s")

    limits = httpx.Limits(max_connections=len(urls) * 2)
    async with httpx.AsyncClient(timeout=10, limits=limits) as client:
        await asyncio.gather(*(one(client, url) for url in urls))
    return time.monotonic() - started


def run(isolation: bool, keep_logs: bool, pool: Pool) -> dict[str, Any]:
    server = postgres_server_url()
    database_url = create_database(server)
    stages: list[Stage] = []
    with ExitStack() as stack:
        stack.callback(drop_database, server, database_url)
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="berth-fanout-")))
        logs = workdir / "logs"
        logs.mkdir()
        if keep_logs:
            print(f"logs in {logs} (kept until the run ends)")
        tokens_env = dict(os.environ) | {"BERTH_DATABASE_URL": database_url}
        admin = mint_token(tokens_env, "fanout-bench", "admin")
        reader = mint_token(tokens_env, "fanout-serving", "reader")
        regs = stack.enter_context(registries(database_url, workdir / "artifacts", logs, pool))
        apis = [
            stack.enter_context(
                httpx.Client(
                    base_url=r.url + "/api/v1",
                    headers={"Authorization": f"Bearer {admin}"},
                    timeout=60,
                )
            )
            for r in regs
        ]
        total = sum(n for _, n in STAGES) + 1
        for number in range(1, total + 1):
            estimator = regressor(offset=float(number))
            meta = metadata(estimator).model_dump(mode="json", exclude_none=True)
            created = upload_ok(apis[number % 2], MODEL, artifact(estimator), metadata=meta)
            assert created["version"] == number
        promote(apis[0], 1)
        version = 1
        serving: list[ServiceProcess] = []

        def stop_serving() -> None:
            for process in serving:
                process.stop()

        stack.callback(stop_serving)
        for count, promotions in STAGES:
            began = time.monotonic()
            serving += start_serving(
                [r.url for r in regs], len(serving), count - len(serving), logs, isolation, reader
            )
            urls = [p.url for p in serving]
            asyncio.run(until_all_serve(urls, version, within=120))
            took = time.monotonic() - began
            print(f"{count} serving processes up and serving v{version} ({took:.0f} s)")
            stage = Stage(count, [], [], [connections(database_url)])
            sampler = Sampler(database_url)
            with sampler:
                for i in range(promotions):
                    version += 1
                    through = version % 2
                    promote(apis[through], version)
                    seconds = asyncio.run(until_all_serve(urls, version, within=30))
                    stage.seconds.append(seconds)
                    stage.through.append(through)
                    print(
                        f"  v{version} through registry {through}: every process in {seconds:.3f} s"
                    )
                    if i < promotions - 1:
                        time.sleep(0.3)  # let the heartbeats settle, as separate promotions would
            stage.connections += sampler.samples
            stages.append(stage)
            summary = stage.summary()
            print(
                f"{count:>2} serving: p50 {summary['p50_seconds']:.3f} s, "
                f"p99 {summary['p99_seconds']:.3f} s, max {summary['max_seconds']:.3f} s; "
                f"postgres connections max {summary['postgres_connections_max']}"
            )
    final = stages[-1].summary()
    return {
        "benchmark": "fanout",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            # Other work on the machine shares its cores: the figures depend on it.
            "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        },
        "setup": {
            "registries": 2,
            "database": "postgres (a fresh database)",
            "artifacts": "local directory",
            "load_isolation": isolation,
            "authentication": "on (admin token for the bench, reader token for serving)",
            "registry_pool": {"size": pool.size, "max_overflow": pool.max_overflow},
            "connection_bound": REGISTRIES * (pool.size + pool.max_overflow + 1),
            "poll_interval_seconds": POLL_SECONDS,
        },
        "stages": [s.summary() for s in stages],
        "target": {"p99_seconds": P99_TARGET_SECONDS},
        "p99_seconds": final["p99_seconds"],
        "met": final["p99_seconds"] <= P99_TARGET_SECONDS,
        "connections_by_serving_processes": {s.serving: max(s.connections) for s in stages},
    }


def promote(api: httpx.Client, version: int) -> None:
    response = api.put(f"/models/{MODEL}/aliases/production", json={"version": version})
    assert response.status_code == 200, response.text


class Sampler:
    """Counts the database's connections every 100 ms in a thread while a stage promotes."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            # The sampler's own connection is to `postgres`, not the measured database.
            self.samples.append(connections(self.database_url))

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--no-isolation",
        action="store_true",
        help="Load in the serving process itself (BERTH_LOAD_ISOLATION=false).",
    )
    parser.add_argument("--keep-logs", action="store_true")
    parser.add_argument("--pool-size", type=int, default=4, help="BERTH_DATABASE_POOL_SIZE")
    parser.add_argument("--max-overflow", type=int, default=0, help="BERTH_DATABASE_MAX_OVERFLOW")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "bench/results/fanout.json")
    args = parser.parse_args()
    result = run(
        isolation=not args.no_isolation,
        keep_logs=args.keep_logs,
        pool=Pool(args.pool_size, args.max_overflow),
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(
        json.dumps(
            {k: result[k] for k in ("p99_seconds", "met", "connections_by_serving_processes")}
        )
    )
    print(f"wrote {args.output}")
    return 0 if result["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
