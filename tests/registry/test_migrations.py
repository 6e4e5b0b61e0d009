"""The migrations build exactly the schema the models describe, both ways, on both databases."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select

from registry import migrate
from registry.db import Database
from registry.models import Base, FeedCounter
from tests.fixtures.databases import create_database, drop_database
from tests.fixtures.servers import REPO_ROOT, ServiceProcess

APP_TABLES = set(Base.metadata.tables)


@pytest.fixture(params=["postgres", "sqlite"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A database with no schema at all, as a new installation starts."""
    if request.param == "postgres":
        server: str = request.getfixturevalue("postgres_server")
        url = create_database(server, migrated=False)
    else:
        url = f"sqlite:///{tmp_path / 'fresh.db'}"
    database = Database(url)
    try:
        yield database
    finally:
        database.dispose()
        if request.param == "postgres":
            drop_database(server, url)


def drift(database: Database) -> list[Any]:
    """What `alembic revision --autogenerate` would emit: the models against the live schema."""
    with database.engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                # As migrations/env.py configures it.
                "target_metadata": Base.metadata,
                "render_as_batch": conn.dialect.name == "sqlite",
                "compare_type": True,
            },
        )
        return list(compare_metadata(context, Base.metadata))


def tables(database: Database) -> set[str]:
    with database.engine.connect() as conn:
        return set(inspect(conn).get_table_names())


def feed_counter_rows(database: Database) -> list[tuple[int, int]]:
    with database.transaction(write=False) as session:
        rows = session.execute(select(FeedCounter.id, FeedCounter.position)).all()
        return [(row.id, row.position) for row in rows]


def test_upgrade_to_head_builds_the_models_schema_without_drift(empty_database: Database) -> None:
    assert migrate.current_revision(empty_database) is None

    migrate.upgrade(empty_database)

    assert migrate.current_revision(empty_database) == migrate.head_revision(empty_database)
    assert migrate.is_up_to_date(empty_database)
    assert tables(empty_database) == APP_TABLES | {"alembic_version"}
    assert drift(empty_database) == []
    # The data the schema needs to work, not just its shape: the single feed counter row.
    assert feed_counter_rows(empty_database) == [(1, 0)]


def test_downgrade_to_base_removes_every_app_table_and_upgrade_works_again(
    empty_database: Database,
) -> None:
    migrate.upgrade(empty_database)

    migrate.downgrade(empty_database, "base")

    assert tables(empty_database) - {"alembic_version"} == set()
    assert migrate.current_revision(empty_database) is None

    migrate.upgrade(empty_database)

    assert migrate.is_up_to_date(empty_database)
    assert drift(empty_database) == []
    assert feed_counter_rows(empty_database) == [(1, 0)]


def test_upgrading_an_up_to_date_database_changes_nothing(empty_database: Database) -> None:
    migrate.upgrade(empty_database)
    migrate.upgrade(empty_database)
    assert migrate.is_up_to_date(empty_database)
    assert feed_counter_rows(empty_database) == [(1, 0)]


def test_the_drift_check_would_notice_a_model_the_migrations_lack(
    empty_database: Database,
) -> None:
    # Guard the guard: with one table missing from the schema, compare_metadata must say so.
    migrate.upgrade(empty_database)
    with empty_database.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE replicas")
    assert ("add_table", "replicas") in [
        (diff[0], diff[1].name) for diff in drift(empty_database) if isinstance(diff, tuple)
    ]


# --- the service and the schema -------------------------------------------------------------


def registry_env(database: Database, tmp_path: Path) -> dict[str, str]:
    return {
        "BERTH_DATABASE_URL": database.url.render_as_string(hide_password=False),
        "BERTH_ARTIFACT_STORE": (tmp_path / "artifacts").as_uri(),
        "BERTH_AUTH": "false",
    }


def test_the_registry_refuses_to_start_on_a_schema_behind_head(
    empty_database: Database, tmp_path: Path
) -> None:
    log = tmp_path / "registry.log"
    service = ServiceProcess(
        ["registry", "serve"], env=registry_env(empty_database, tmp_path), log_path=log
    )

    with pytest.raises(RuntimeError, match="exited with"):
        service.start(timeout=30)

    assert service.process is not None
    assert service.process.returncode != 0
    output = log.read_text()
    assert "the database schema is at revision none" in output
    assert "python -m registry db upgrade" in output
    # It refused: it did not quietly build the schema itself.
    assert tables(empty_database) - {"alembic_version"} == set()


def test_db_upgrade_command_then_the_registry_starts(
    empty_database: Database, tmp_path: Path
) -> None:
    env = registry_env(empty_database, tmp_path)
    upgraded = subprocess.run(
        [sys.executable, "-m", "registry", "db", "upgrade"],
        env=os.environ | env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert upgraded.returncode == 0, upgraded.stderr
    assert upgraded.stdout.strip().splitlines()[-1] == migrate.head_revision(empty_database)
    assert drift(empty_database) == []

    with ServiceProcess(["registry", "serve"], env=env, log_path=tmp_path / "log") as service:
        response = httpx.get(service.url + "/api/v1/models", timeout=10)
        assert response.status_code == 200, response.text
        assert response.json()["items"] == []
