"""Benchmark: the registry's read and promote latency at 1,000 models x 50 versions on Postgres.

A fresh database (the test suite's `create_database`, migrated by Alembic) and a running
`python -m registry serve` (authentication on). One real version is pushed through the HTTP API
with `berth.Client.push` (a LinearRegression, 10 features, signature and example); its row is the
template the seed copies: 1,000 models x 50 versions written straight into the tables with
SQLAlchemy Core bulk inserts (models, blobs, model_versions, version_files, aliases with a
production revision each, the change-feed position, an audit event per write), as 50,000 uploads
would have left them. Then every figure is measured through the HTTP API, one request at a time
on a kept-alive connection, random models and versions:

  list models    GET /api/v1/models?limit=50[&cursor=...]   (every page, in turn)
  get model      GET /api/v1/models/{name}
  list versions  GET /api/v1/models/{name}/versions          (first page, 50)
  get version    GET /api/v1/models/{name}/versions/{v}
  get alias      GET /api/v1/models/{name}/aliases/production
  promote        PUT /api/v1/models/{name}/aliases/production  {"version": v}

Targets (issue 6): list/get p95 <= 20 ms, promote p95 <= 30 ms. Writes
bench/results/registry-<timestamp>.json and registry-latest.json.

    make bench-registry      # or: .venv/bin/python bench/registry_scale.py --requests 300
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from sqlalchemy import insert, select, text, update

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    Process,
    machine,
    mint_token,
    now,
    percentile,
    registry_env,
    registry_process,
    verdict,
    write_results,
)

from registry.db import Database
from registry.models import (
    Alias,
    AliasRevision,
    AuditEvent,
    Blob,
    FeedCounter,
    Model,
    ModelVersion,
    VersionFile,
)
from tests.fixtures.databases import DEFAULT_TEST_DATABASE_URL, create_database, drop_database

MODELS = 1000
VERSIONS = 50
LIST_GET_P95_MS = 20.0
PROMOTE_P95_MS = 30.0
BATCH = 5000


def file_digest(model: int, version: int, name: str) -> str:
    return hashlib.sha256(f"{model}:{version}:{name}".encode()).hexdigest()


def model_name(i: int) -> str:
    return f"model-{i:04d}"


def seed(database: Database, template_name: str, models: int, versions: int) -> float:
    """Bulk-insert `models` x `versions` copies of the template version; returns seconds."""
    started = time.perf_counter()
    with database.engine.begin() as conn:
        template = (
            conn.execute(
                select(ModelVersion.__table__).join(Model).where(Model.name == template_name)
            )
            .one()
            ._mapping
        )
        # Every file of the template (the joblib artifact and, where it converts, its ONNX
        # rendition): each seeded version gets the same set, each file its own blob.
        template_files = [
            row._mapping
            for row in conn.execute(
                select(VersionFile.__table__).where(VersionFile.version_id == template["id"])
            )
        ]
        copied = {
            k: template[k]
            for k in (
                "status",
                "flavor",
                "size",
                "signature",
                "example",
                "metrics",
                "params",
                "tags",
                "description",
                "lineage",
                "created_by",
            )
        }
        conn.execute(
            insert(Model),
            [
                {
                    "name": model_name(i),
                    "description": f"benchmark model {i}",
                    "tags": {"team": f"team-{i % 20}"},
                    "latest_version": versions,
                    "created_by": "bench",
                }
                for i in range(models)
            ],
        )
        ids = dict(
            conn.execute(select(Model.name, Model.id).where(Model.name.like("model-%"))).all()
        )
        rows: list[dict[str, Any]] = []
        blobs: list[dict[str, Any]] = []
        audits: list[dict[str, Any]] = []
        for i in range(models):
            for v in range(1, versions + 1):
                for f in template_files:
                    blobs.append({"sha256": file_digest(i, v, f["name"]), "size": f["size"]})
                digest = file_digest(i, v, "artifact")
                rows.append(
                    copied | {"model_id": ids[model_name(i)], "version": v, "sha256": digest}
                )
                audits.append(
                    {
                        "actor": "bench",
                        "action": "version.create",
                        "model": model_name(i),
                        "version": v,
                        "detail": {},
                    }
                )
        for start in range(0, len(blobs), BATCH):
            conn.execute(insert(Blob), blobs[start : start + BATCH])
        for start in range(0, len(rows), BATCH):
            conn.execute(insert(ModelVersion), rows[start : start + BATCH])
        version_ids = conn.execute(
            select(ModelVersion.id, Model.name, ModelVersion.version)
            .join(Model, Model.id == ModelVersion.model_id)
            .where(Model.name.like("model-%"))
        ).all()
        files = [
            {
                "version_id": vid,
                "name": f["name"],
                "sha256": file_digest(int(name.removeprefix("model-")), number, f["name"]),
                "size": f["size"],
                "media_type": f["media_type"],
            }
            for vid, name, number in version_ids
            for f in template_files
        ]
        for start in range(0, len(files), BATCH):
            conn.execute(insert(VersionFile), files[start : start + BATCH])
        # Each model's production alias at its latest version, revision 1, in the change feed.
        position = conn.execute(select(FeedCounter.position)).scalar_one()
        spec = {"variants": [{"version": versions, "weight": 100}], "shadow": []}
        conn.execute(
            insert(Alias),
            [
                {
                    "model_id": ids[model_name(i)],
                    "name": "production",
                    "revision": 1,
                    "spec": spec,
                    "reason": "",
                    "updated_by": "bench",
                }
                for i in range(models)
            ],
        )
        alias_ids = dict(
            conn.execute(
                select(Model.name, Alias.id)
                .join(Alias, Alias.model_id == Model.id)
                .where(Model.name.like("model-%"))
            ).all()
        )
        conn.execute(
            insert(AliasRevision),
            [
                {
                    "seq": position + 1 + i,
                    "alias_id": alias_ids[model_name(i)],
                    "model_name": model_name(i),
                    "alias_name": "production",
                    "revision": 1,
                    "action": "set",
                    "spec": spec,
                    "base_revision": 1,
                    "reason": "",
                    "created_by": "bench",
                }
                for i in range(models)
            ],
        )
        conn.execute(update(FeedCounter).values(position=position + models))
        audits += [
            {
                "actor": "bench",
                "action": "alias.set",
                "model": model_name(i),
                "alias": "production",
                "version": versions,
                "detail": {},
            }
            for i in range(models)
        ]
        for start in range(0, len(audits), BATCH):
            conn.execute(insert(AuditEvent), audits[start : start + BATCH])
    with database.engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE"))
    return time.perf_counter() - started


def timed(client: httpx.Client, method: str, url: str, **kwargs: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    response = client.request(method, url, **kwargs)
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code >= 300:
        raise RuntimeError(f"{method} {url}: {response.status_code} {response.text[:300]}")
    return elapsed, response


def measure(
    client: httpx.Client, requests: int, models: int, versions: int
) -> dict[str, list[float]]:
    rng = random.Random(6)
    api = "/api/v1"
    out: dict[str, list[float]] = {}

    def run(name: str, call: Callable[[], float]) -> None:
        for _ in range(10):  # warm: connection, caches, the first query plans
            call()
        out[name] = [call() for _ in range(requests)]

    cursor: list[str | None] = [None]

    def list_models() -> float:
        params = {"limit": 50} | ({"cursor": cursor[0]} if cursor[0] else {})
        elapsed, response = timed(client, "GET", f"{api}/models", params=params)
        cursor[0] = response.json().get("next_cursor")
        return elapsed

    def pick() -> str:
        return model_name(rng.randrange(models))

    run("list models", list_models)
    run("get model", lambda: timed(client, "GET", f"{api}/models/{pick()}")[0])
    run("list versions", lambda: timed(client, "GET", f"{api}/models/{pick()}/versions")[0])
    run(
        "get version",
        lambda: timed(client, "GET", f"{api}/models/{pick()}/versions/{rng.randint(1, versions)}")[
            0
        ],
    )
    run("get alias", lambda: timed(client, "GET", f"{api}/models/{pick()}/aliases/production")[0])
    run(
        "promote",
        lambda: timed(
            client,
            "PUT",
            f"{api}/models/{pick()}/aliases/production",
            json={"version": rng.randint(1, versions)},
        )[0],
    )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=MODELS)
    parser.add_argument("--versions", type=int, default=VERSIONS)
    parser.add_argument("--requests", type=int, default=300, help="timed requests per figure")
    parser.add_argument("--quick", action="store_true", help="100 models, 100 requests")
    parser.add_argument("--keep", action="store_true", help="keep the database (prints its URL)")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BERTH_TEST_DATABASE_URL", DEFAULT_TEST_DATABASE_URL),
        help="Postgres server the scratch database is created on",
    )
    args = parser.parse_args()
    if args.quick:
        args.models, args.requests = 100, 100

    database_url = create_database(args.database_url)
    registry: Process | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="berth-registry-bench-") as scratch:
            work = Path(scratch)
            env = registry_env(database_url, work)
            admin = mint_token(env, "bench-admin", "admin")
            registry = registry_process(env, work / "registry.log").start()

            from sklearn.linear_model import LinearRegression

            import berth

            x = np.random.default_rng(0).normal(size=(100, 10))
            with berth.Client(registry.url, token=admin) as client:
                client.push(LinearRegression().fit(x, x.sum(axis=1)), "template", sample=x[:3])

            database = Database(database_url)
            try:
                seconds = seed(database, "template", args.models, args.versions)
            finally:
                database.dispose()
            print(
                f"seeded {args.models} models x {args.versions} versions in {seconds:.1f} s",
                flush=True,
            )

            headers = {"Authorization": f"Bearer {admin}"}
            with httpx.Client(base_url=registry.url, headers=headers, timeout=30) as client:
                samples = measure(client, args.requests, args.models, args.versions)
    except BaseException:
        if registry is not None:
            print(registry.tail(), file=sys.stderr)
        raise
    finally:
        if registry is not None:
            registry.stop()
        if args.keep:
            print(f"database kept: {database_url}")
        else:
            drop_database(args.database_url, database_url)

    figures: dict[str, dict[str, Any]] = {}
    all_ok = True
    print(f"\n{'operation':14} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'target':>10}")
    for name, values in samples.items():
        goal = PROMOTE_P95_MS if name == "promote" else LIST_GET_P95_MS
        p95 = percentile(values, 95)
        ok = p95 <= goal
        all_ok &= ok
        figures[name] = {
            "p50_ms": round(statistics.median(values), 2),
            "p95_ms": round(p95, 2),
            "p99_ms": round(percentile(values, 99), 2),
            "max_ms": round(max(values), 2),
            "target_p95_ms": goal,
            "pass": ok,
        }
        f = figures[name]
        print(
            f"{name:14} {f['p50_ms']:>8.2f} {f['p95_ms']:>8.2f} {f['p99_ms']:>8.2f} "
            f"{'<= ' + str(goal):>10}  {verdict(ok)}"
        )
    result = {
        "benchmark": "registry_scale",
        "at": now(),
        "models": args.models,
        "versions_per_model": args.versions,
        "requests_per_figure": args.requests,
        "figures": figures,
        "pass": all_ok,
        "setup": {
            "registry": "python -m registry serve (one uvicorn process), auth on, admin token",
            "database": "Postgres, fresh database, seeded by bulk INSERT, then ANALYZE",
            "client": "httpx, one request at a time, kept-alive connection",
            **machine(),
        },
    }
    path = write_results("registry", result)
    print(f"results: {path}")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
