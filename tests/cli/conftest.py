"""A real `berth up` subprocess, and two ways to run the CLI against it.

`cli(...)` runs the Typer app in this process (fast: most tests); `berth(...)` runs the installed
`berth` console script as a child process, as a user would.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from berth.cli import app
from tests.fixtures.servers import REPO_ROOT, ServiceProcess

BERTH = Path(sys.executable).parent / "berth"

# Wide enough that tables never wrap a value the tests look for.
CLI_ENV = {"COLUMNS": "250", "NO_COLOR": "1", "TERM": "dumb"}


@dataclass(frozen=True)
class Instance:
    url: str
    data_dir: Path
    process: ServiceProcess

    @property
    def env(self) -> dict[str, str]:
        """What a user on this machine has: the URL, and the data dir holding the token."""
        return {**CLI_ENV, "BERTH_URL": self.url, "BERTH_DATA_DIR": str(self.data_dir)}

    @property
    def admin_token(self) -> str:
        return (self.data_dir / "admin-token").read_text().strip()


@dataclass(frozen=True)
class Result:
    exit_code: int
    stdout: str
    stderr: str


def start_berth_up(data_dir: Path, log: Path, **env: str) -> ServiceProcess:
    process = ServiceProcess(
        ["berth.cli", "up", "--data-dir", str(data_dir)],
        env={"BERTH_FEED_POLL_SECONDS": "0.2", **env},
        log_path=log,
        health_path="/readyz",
    )
    return process.start(timeout=60)


@pytest.fixture(scope="session")
def instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    """One `berth up` for the CLI tests: embedded defaults, authentication on."""
    root = tmp_path_factory.mktemp("berth-up")
    data_dir = root / "data"
    process = start_berth_up(data_dir, root / "berth-up.log")
    try:
        yield Instance(process.url, data_dir, process)
    finally:
        process.stop()


def _clean_env(env: dict[str, str]) -> dict[str, str]:
    """This process's environment minus any BERTH_ a developer has set, plus `env`."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}
    return {**base, **env}


@pytest.fixture
def cli(instance: Instance) -> Iterator[Callable[..., Result]]:
    runner = CliRunner()
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("BERTH_")}

    def run(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> Result:
        result = runner.invoke(app, list(args), env={**instance.env, **(env or {})}, input=input)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return Result(result.exit_code, result.stdout, result.stderr)

    try:
        yield run
    finally:
        os.environ.update(saved)


def berth(*args: str, env: dict[str, str], cwd: Path = REPO_ROOT, timeout: float = 120) -> Result:
    """The installed console script, in a child process."""
    done = subprocess.run(
        [str(BERTH), *args],
        env=_clean_env(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Result(done.returncode, done.stdout, done.stderr)
