"""A user's mistake is one line naming it and exit 1: never a traceback.

Each case here once printed a Python traceback. They run as the user does, through the `berth`
console script in a child process; the mistakes that need no process of their own (argument
parsing) go through Typer's runner. None needs a running Berth: every mistake is found before the
first request, and `--url` points at a closed port so a check that failed to fire shows up as
"cannot reach" rather than as a request to whatever listens on 8000.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import joblib
import pytest
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner

from berth.cli import app
from tests.cli.conftest import CLI_ENV, Result, berth
from tests.fixtures.servers import free_port

SECRET_PASSWORD = "hunter2-not-for-logs"
"""In a database URL: the error may name the URL, never this."""


def one_line(result: Result, *fragments: str) -> str:
    """Exit 1, one `error:` line on stderr holding every fragment, no traceback anywhere."""
    output = result.stdout + result.stderr
    assert result.exit_code == 1, f"exit {result.exit_code}\n{output}"
    assert "Traceback" not in output, output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """What a user's directory may hold: a real model, a sample, and things that are not."""
    root = tmp_path_factory.mktemp("user-files")
    found = {
        "model": root / "model.joblib",
        "sample": root / "sample.json",
        "garbage": root / "bad.joblib",
        "truncated": root / "truncated.joblib",
        "skops": root / "model.skops",
        "directory": root / "a-directory",
        "a-file": root / "not-a-directory",
    }
    joblib.dump(
        LogisticRegression().fit([[0, 1], [1, 0], [1, 1], [0, 0]], [0, 1, 1, 0]), found["model"]
    )
    found["sample"].write_text(json.dumps([[1.0, 2.0]]))
    found["garbage"].write_bytes(bytes(range(193, 256)) * 4)
    found["truncated"].write_bytes(found["model"].read_bytes()[:200])
    found["skops"].write_bytes(b"PK\x03\x04 not really a skops zip")
    found["directory"].mkdir()
    found["a-file"].write_text("I am a file\n")
    return found


@pytest.fixture(scope="module")
def closed_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


def run(*args: str, cwd: Path, **env: str) -> Result:
    return berth(*args, env={**CLI_ENV, **env}, cwd=cwd, timeout=60)


# --- push: the artifact -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("artifact", "fragments"),
    [
        ("garbage", ("bad.joblib does not load as a joblib/pickle model",)),
        ("truncated", ("truncated.joblib does not load as a joblib/pickle model",)),
        ("skops", ("model.skops is skops", "push it without a sample")),
        ("directory", ("a-directory is a directory, not a file",)),
    ],
)
def test_push_of_an_artifact_that_cannot_be_loaded(
    files: dict[str, Path], closed_url: str, artifact: str, fragments: tuple[str, ...]
) -> None:
    result = run(
        "push",
        str(files[artifact]),
        "--model",
        "churn",
        "--sample",
        str(files["sample"]),
        "--url",
        closed_url,
        cwd=files["model"].parent,
    )
    one_line(result, *fragments)


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux's /proc")
def test_push_of_a_file_that_cannot_be_read(files: dict[str, Path], closed_url: str) -> None:
    # A regular file that opens but fails to read (EIO), whoever runs the tests: root reads past
    # any file mode, so `chmod 000` would prove nothing under root.
    line = one_line(
        run(
            "push",
            "/proc/self/mem",
            "--model",
            "churn",
            "--url",
            closed_url,
            cwd=files["model"].parent,
        ),
        "cannot read /proc/self/mem",
    )
    assert "cannot reach" not in line


def test_push_of_a_device_and_of_a_directory_as_a_rendition(
    files: dict[str, Path], closed_url: str
) -> None:
    cwd = files["model"].parent
    one_line(
        run("push", "/dev/null", "--model", "churn", "--url", closed_url, cwd=cwd),
        "/dev/null is not a regular file",
    )
    one_line(
        run(
            "push",
            str(files["model"]),
            "--model",
            "churn",
            "--file",
            f"onnx={files['directory']}",
            "--url",
            closed_url,
            cwd=cwd,
        ),
        "a-directory is a directory, not a file",
    )


# --- the URLs the client is given ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("models", "--url", "http://[bad"), "the registry URL 'http://[bad' is not a valid URL"),
        (
            ("predict", "churn", "--input", "[[1, 2]]", "--url", "http://[::1"),
            "the registry URL 'http://[::1' is not a valid URL",
        ),
        (
            ("predict", "churn", "--input", "[[1, 2]]", "--serving-url", "http://[::1"),
            "the serving URL 'http://[::1' is not a valid URL",
        ),
        (("models", "--url", "localhost:8000"), "is not an http:// or https:// URL"),
        (("versions", "churn", "--url", "ftp://example.com"), "is not an http:// or https:// URL"),
        (("doctor", "--url", "http://[bad"), "the registry URL 'http://[bad' is not a valid URL"),
    ],
)
def test_a_url_that_does_not_parse(tmp_path: Path, args: tuple[str, ...], fragment: str) -> None:
    one_line(run(*args, cwd=tmp_path), fragment)


# --- the database and the data directory --------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "database_url", "fragment"),
    [
        (("db", "upgrade"), "garbage://x", "the database URL garbage://x cannot be used"),
        (("db", "current"), "garbage://x", "the database URL garbage://x cannot be used"),
        (("db", "upgrade"), "garbage", "the database URL does not parse"),
        (
            ("token", "create", "ops", "--database"),
            "garbage://x",
            "the database URL garbage://x cannot be used",
        ),
        (
            ("db", "upgrade"),
            f"garbage://admin:{SECRET_PASSWORD}@db.internal/berth",
            "the database URL garbage://admin:***@db.internal/berth cannot be used",
        ),
        (("registry", "--port", "0"), "garbage://x", "the database URL garbage://x cannot be used"),
    ],
)
def test_a_database_url_no_driver_speaks(
    tmp_path: Path, args: tuple[str, ...], database_url: str, fragment: str
) -> None:
    line = one_line(run(*args, cwd=tmp_path, BERTH_DATABASE_URL=database_url), fragment)
    assert SECRET_PASSWORD not in line


@pytest.mark.parametrize(
    ("where", "reason"),
    [("/proc/nope", "No such file or directory"), ("a-file", "it is not a directory")],
)
def test_up_with_a_data_dir_that_cannot_be_one(
    files: dict[str, Path], where: str, reason: str
) -> None:
    data_dir = str(files.get(where, where))
    one_line(
        run("up", "--data-dir", data_dir, "--port", "0", cwd=files["model"].parent),
        f"cannot use {data_dir} as the data directory: {reason}",
    )


def test_db_upgrade_with_a_data_dir_that_is_a_file(files: dict[str, Path]) -> None:
    one_line(
        run("db", "upgrade", cwd=files["model"].parent, BERTH_DATA_DIR=str(files["a-file"])),
        "as the SQLite database's directory: it is not a directory",
    )


def test_token_bootstrap_into_a_directory_that_cannot_be_made(tmp_path: Path) -> None:
    env = {"BERTH_DATA_DIR": str(tmp_path / "data")}
    assert run("db", "upgrade", cwd=tmp_path, **env).exit_code == 0
    one_line(
        run("token", "bootstrap", "--dir", "/proc/nope", cwd=tmp_path, **env),
        "cannot use /proc/nope as the token directory",
    )


def test_db_upgrade_to_a_revision_that_does_not_exist(tmp_path: Path) -> None:
    one_line(
        run("db", "upgrade", "no-such-revision", cwd=tmp_path, BERTH_DATA_DIR=str(tmp_path)),
        "cannot upgrade the database to 'no-such-revision'",
    )


def test_commands_on_a_database_never_migrated_name_the_fix(tmp_path: Path) -> None:
    env = {"BERTH_DATA_DIR": str(tmp_path / "data"), "BERTH_AUTH": "false"}
    for args in (("token", "list", "--database"), ("registry", "--port", "0")):
        one_line(run(*args, cwd=tmp_path, **env), "schema is at revision none", "berth db upgrade")


def test_registry_with_an_artifact_store_it_does_not_know(tmp_path: Path) -> None:
    env = {"BERTH_DATA_DIR": str(tmp_path), "BERTH_ARTIFACT_STORE": "ftp://bucket/x"}
    assert run("db", "upgrade", cwd=tmp_path, **env).exit_code == 0
    one_line(
        run("registry", "--port", "0", cwd=tmp_path, **env),
        "unsupported artifact store 'ftp://bucket/x'",
    )


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield int(sock.getsockname()[1])


def test_registry_and_serve_on_a_port_in_use(tmp_path: Path, taken_port: int) -> None:
    env = {"BERTH_DATA_DIR": str(tmp_path)}
    assert run("db", "upgrade", cwd=tmp_path, **env).exit_code == 0
    for command in ("registry", "serve"):
        one_line(
            run(command, "--port", str(taken_port), cwd=tmp_path, **env),
            f"cannot listen on 127.0.0.1:{taken_port}",
        )


# --- mistakes in arguments: found before any process or request is needed ----------------------


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, closed_url: str) -> CliRunner:
    for key in [k for k in os.environ if k.startswith("BERTH_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("BERTH_URL", closed_url)
    for key, value in CLI_ENV.items():
        monkeypatch.setenv(key, value)
    return CliRunner()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("predict", "churn", "--input", "{bad"), "--input is not valid JSON"),
        (("predict", "churn", "--input", "@<missing>"), "cannot read --input from"),
        (("predict", "churn", "--input", "@<directory>"), "cannot read --input from"),
        (("predict", "churn", "--input", "3"), "--input must be a JSON array"),
        (
            ("push", "<model>", "--model", "churn", "--metric", "auc"),
            "metric 'auc' is not KEY=VALUE",
        ),
        (("push", "<model>", "--model", "churn", "--metric", "auc=high"), "is not a number"),
        (("push", "<model>", "--model", "churn", "--tag", "team"), "tag 'team' is not KEY=VALUE"),
        (("push", "<model>", "--model", "churn", "--param", "=1"), "param '=1' is not KEY=VALUE"),
        (("push", "<model>", "--model", "Churn Model"), "model name 'Churn Model' is not valid"),
        (("push", "<missing>", "--model", "churn"), "no such file"),
        (
            ("push", "<model>", "--model", "churn", "--sample", "<garbage>"),
            "cannot read the sample",
        ),
        (
            ("push", "<model>", "--model", "churn", "--sample", "<missing>"),
            "cannot read the sample",
        ),
        (("split", "churn", "3:90"), "'3:90' is not VERSION=WEIGHT"),
        (("show", "churn:0"), "must be a positive number"),
        (("show", "churn@"), "the alias after '@' is empty"),
        (("token", "create", "Bad Name"), "token name 'Bad Name' must match"),
    ],
)
def test_argument_mistakes(
    cli: CliRunner, files: dict[str, Path], args: tuple[str, ...], fragment: str
) -> None:
    names = {k: str(v) for k, v in files.items()} | {"missing": str(files["model"].parent / "nope")}
    for name, path in names.items():
        args = tuple(a.replace(f"<{name}>", path) for a in args)
    result = cli.invoke(app, list(args))
    assert isinstance(result.exception, SystemExit), result.exception
    one_line(Result(result.exit_code, result.stdout, result.stderr), fragment)
