"""The production commands' success paths, through the `berth` console script as an operator runs
them: `db upgrade` on a fresh database, `token bootstrap`, then `berth registry` and a `berth serve`
replica pointed at it as real processes, and `berth doctor` finding the pair healthy."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from alembic.script import ScriptDirectory
from typer.testing import CliRunner

import migrations
from berth.cli import app
from registry import migrate
from registry.db import Database
from tests.cli.conftest import BERTH, CLI_ENV, Instance, Result, berth
from tests.fixtures.databases import create_database, drop_database
from tests.fixtures.servers import ServiceProcess, free_port
from tests.fixtures.waiting import eventually


def ok(result: Result) -> Result:
    assert result.exit_code == 0, f"exit {result.exit_code}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stdout + result.stderr
    return result


def head() -> str:
    """The newest migration this checkout ships."""
    revision = ScriptDirectory(str(Path(migrations.__file__).parent)).get_current_head()
    assert revision is not None
    return revision


@dataclass(frozen=True)
class Installation:
    """What an operator's machine holds after `berth db upgrade` and `berth token bootstrap`."""

    root: Path
    env: dict[str, str]
    tokens: Path

    @property
    def admin_token(self) -> str:
        return (self.tokens / "admin-token").read_text().strip()


@pytest.fixture(scope="module")
def installation(tmp_path_factory: pytest.TempPathFactory) -> Installation:
    root = tmp_path_factory.mktemp("production")
    env = {
        **CLI_ENV,
        "BERTH_DATABASE_URL": f"sqlite:///{root / 'registry.db'}",
        "BERTH_ARTIFACT_STORE": (root / "artifacts").as_uri(),
        "BERTH_FEED_POLL_SECONDS": "0.2",
    }
    upgraded = ok(berth("db", "upgrade", env=env, cwd=root))
    assert upgraded.stdout.strip() == f"database at revision {head()}"
    tokens = root / "tokens"
    ok(berth("token", "bootstrap", "--dir", str(tokens), env=env, cwd=root))
    return Installation(root, env, tokens)


def test_db_upgrade_migrates_a_fresh_sqlite_file(installation: Installation) -> None:
    assert (installation.root / "registry.db").is_file()
    current = ok(berth("db", "current", env=installation.env, cwd=installation.root))
    assert current.stdout.strip() == head()  # and no "run `berth db upgrade`" note
    # A second upgrade is a no-op that says where the database is.
    again = ok(berth("db", "upgrade", env=installation.env, cwd=installation.root))
    assert again.stdout.strip() == f"database at revision {head()}"


@pytest.mark.postgres
def test_db_upgrade_migrates_a_fresh_postgres_database(
    postgres_server: str, tmp_path: Path
) -> None:
    url = create_database(postgres_server, migrated=False)
    try:
        env = {**CLI_ENV, "BERTH_DATABASE_URL": url}
        upgraded = ok(berth("db", "upgrade", env=env, cwd=tmp_path))
        assert upgraded.stdout.strip() == f"database at revision {head()}"
        database = Database(url)
        try:
            assert migrate.is_up_to_date(database)
        finally:
            database.dispose()
    finally:
        drop_database(postgres_server, url)


def _berth_service(
    args: list[str], env: dict[str, str], log_path: Path
) -> Iterator[ServiceProcess]:
    """`berth <args>` as a real process, up once its /healthz answers, stopped afterwards."""
    process = ServiceProcess(
        args, program=[str(BERTH)], env=env, log_path=log_path, health_path="/healthz"
    )
    process.start(timeout=60)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def registry(installation: Installation) -> Iterator[ServiceProcess]:
    yield from _berth_service(["registry"], installation.env, installation.root / "registry.log")


@pytest.fixture(scope="module")
def serving(installation: Installation, registry: ServiceProcess) -> Iterator[ServiceProcess]:
    yield from _berth_service(
        ["serve", "--registry-token-file", str(installation.tokens / "serving-token")],
        {**CLI_ENV, "BERTH_REGISTRY_URL": registry.url},
        installation.root / "serving.log",
    )


def test_berth_registry_answers_its_health_routes(
    registry: ServiceProcess, installation: Installation
) -> None:
    assert httpx.get(registry.url + "/healthz", timeout=10).json() == {"status": "ok"}
    ready = httpx.get(registry.url + "/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": "ok", "artifact_store": "ok"}
    # Authentication is on by default, and the bootstrapped admin token passes it.
    assert httpx.get(registry.url + "/api/v1/models", timeout=10).status_code == 401
    me = httpx.get(
        registry.url + "/api/v1/whoami",
        headers={"Authorization": f"Bearer {installation.admin_token}"},
        timeout=10,
    )
    assert me.json()["role"] == "admin"


def test_berth_serve_follows_that_registry(
    serving: ServiceProcess, registry: ServiceProcess, installation: Installation
) -> None:
    assert httpx.get(serving.url + "/healthz", timeout=10).status_code == 200
    # Ready once it has followed the registry's feed with its reader token.
    eventually(
        lambda: httpx.get(serving.url + "/readyz", timeout=10).status_code == 200,
        within=30,
        what="serving ready",
    )
    replicas = httpx.get(
        registry.url + "/api/v1/replicas",
        headers={"Authorization": f"Bearer {installation.admin_token}"},
        timeout=10,
    ).json()
    assert len(replicas) == 1, replicas


def test_doctor_finds_the_pair_healthy_and_shows_no_secret(
    serving: ServiceProcess, registry: ServiceProcess, installation: Installation
) -> None:
    env = {
        **installation.env,
        "BERTH_URL": registry.url,
        "BERTH_SERVING_URL": serving.url,
        "BERTH_TOKEN": installation.admin_token,
    }
    result = ok(berth("doctor", "--json", env=env, cwd=installation.root))
    report = json.loads(result.stdout)
    assert report["healthy"] is True, report
    assert report["config"]["token"] == "berth_… from BERTH_TOKEN"
    # What doctor used to print: the prefix and the secret's first four characters.
    assert installation.admin_token[:10] not in result.stdout
    checks = {c["name"]: c["ok"] for c in report["checks"]}
    assert checks["database (from here)"] is True
    assert checks["serving"] is True


def test_doctor_shows_nothing_of_a_token_of_another_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("BERTH_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("BERTH_DATA_DIR", "/nonexistent/berth-data")
    result = CliRunner().invoke(
        app,
        ["doctor", "--json", "--url", f"http://127.0.0.1:{free_port()}", "--token", "s3cr3t-t0ken"],
    )
    assert isinstance(result.exception, SystemExit)
    report = json.loads(result.stdout)
    assert report["config"]["token"] == "… from --token"
    assert "s3cr3t" not in result.stdout


def test_up_says_how_the_cli_finds_its_token(instance: Instance, tmp_path: Path) -> None:
    """`berth up --data-dir X` prints the line that makes the CLI use its token; the CLI, run
    from elsewhere, then does."""
    assert instance.process.log_path is not None
    log = instance.process.log_path.read_text()
    export = f"export BERTH_DATA_DIR={instance.data_dir.resolve()}"
    assert f"for the CLI to use it: {export}" in log
    env = {**CLI_ENV, "BERTH_URL": instance.url}
    assert berth("models", env=env, cwd=tmp_path).exit_code == 1  # no token without it
    variable, _, value = export.removeprefix("export ").partition("=")
    ok(berth("models", env={**env, variable: value}, cwd=tmp_path))
