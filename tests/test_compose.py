"""docker-compose.yml and the Dockerfile, checked without a Docker engine.

Every variable the compose file sets must be one the service's settings read (or one boto3
reads), every command must be a real `berth` command with real options, and the ports, URLs and
healthcheck paths must agree with each other and with the apps' routes.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import botocore.configprovider
import botocore.credentials
import httpx
import pytest
import typer.main
import yaml
from pydantic_settings import BaseSettings

from berth.cli import app as cli_app
from berth.config import ClientSettings
from registry.config import RegistrySettings
from registry.main import create_app as create_registry_app
from serving.config import ServingSettings
from serving.main import create_app as create_serving_app

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def env_names(settings: type[BaseSettings]) -> set[str]:
    prefix = settings.model_config.get("env_prefix", "")
    return {f"{prefix}{name}".upper() for name in settings.model_fields}


def boto3_variables() -> set[str]:
    """The AWS_* variables botocore reads, from its own tables."""
    names: set[str] = set()
    for entry in botocore.configprovider.BOTOCORE_DEFAUT_SESSION_VARIABLES.values():
        env = entry[1]
        names |= set(env) if isinstance(env, list | tuple) else {env} if env else set()
    provider = botocore.credentials.EnvProvider
    names |= {provider.ACCESS_KEY, provider.SECRET_KEY, *provider.TOKENS}
    source = inspect.getsource(botocore.configprovider)
    names |= set(re.findall(r"'(AWS_ENDPOINT_URL)'", source))
    return {n for n in names if n.startswith("AWS_")}


def interpolate(value: str) -> str:
    """Compose's `${NAME:-default}` with nothing set in the shell: the default."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: interpolate(str(v)) for k, v in env.items()}


def is_berth(service: dict[str, Any]) -> bool:
    return "build" in service


def berth_command(service: dict[str, Any]) -> list[str] | None:
    """The `berth` arguments a service runs (the image's entry point is `berth`)."""
    if not is_berth(service) or "entrypoint" in service:
        return None
    command = service.get("command")
    assert isinstance(command, list), "Berth services give their command as a list"
    return [str(c) for c in command]


def berth_services() -> Iterator[tuple[str, list[str]]]:
    for name, service in SERVICES.items():
        command = berth_command(service)
        if command is not None:
            yield name, command


SETTINGS_OF = {"registry": RegistrySettings, "db": RegistrySettings, "token": RegistrySettings}


def settings_for(command: list[str]) -> type[BaseSettings]:
    return ServingSettings if command[0] == "serve" else SETTINGS_OF[command[0]]


def port_option(command: list[str]) -> int:
    return int(command[command.index("--port") + 1])


def healthcheck_url(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    text = " ".join(test) if isinstance(test, list) else test
    match = re.search(r"http://[^'\" ]+", text)
    assert match, text
    return match.group(0)


# --- variables ----------------------------------------------------------------------------------


def test_every_berth_variable_is_read_by_the_service_it_is_set_on() -> None:
    checked = 0
    for name, command in berth_services():
        allowed = env_names(settings_for(command))
        for variable in environment(SERVICES[name]):
            if variable.startswith("BERTH_"):
                assert variable in allowed, f"{name} sets {variable}, which nothing there reads"
                checked += 1
    assert checked >= 5


def test_no_other_service_gets_berth_variables() -> None:
    for name, service in SERVICES.items():
        if berth_command(service) is None:
            assert not [v for v in environment(service) if v.startswith("BERTH_")], name


def test_every_aws_variable_is_one_boto3_reads() -> None:
    known = boto3_variables()
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"} <= known
    seen = set()
    for name, service in SERVICES.items():
        for variable in environment(service):
            if variable.startswith("AWS_"):
                assert variable in known, f"{name} sets {variable}, which boto3 does not read"
                seen.add(variable)
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"} <= seen


def test_registry_settings_parse_from_the_compose_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for variable, value in environment(SERVICES["registry"]).items():
        monkeypatch.setenv(variable, value)
    settings = RegistrySettings()
    assert settings.database_url.startswith("postgresql+psycopg://")
    assert settings.artifact_store.startswith("s3://")
    assert settings.auth is True


# --- commands -----------------------------------------------------------------------------------


def resolve(command: list[str]) -> Any:
    """The CLI command `command` names, and a check that each of its --options exists."""
    node: Any = typer.main.get_command(cli_app)
    words = list(command)
    while hasattr(node, "commands"):
        word = words.pop(0)
        assert word in node.commands, f"`berth {' '.join(command)}`: no command {word!r}"
        node = node.commands[word]
    options = {opt for param in node.params for opt in param.opts}
    for word in words:
        if word.startswith("--"):
            assert word in options, f"`berth {' '.join(command)}`: no option {word}"
    return node


def test_every_service_runs_a_real_berth_command() -> None:
    commands = dict(berth_services())
    assert commands["registry"][0] == "registry"
    assert commands["migrate"] == ["db", "upgrade"]
    assert commands["tokens"][:2] == ["token", "bootstrap"]
    assert [n for n, c in commands.items() if c[0] == "serve"] == ["serving-1", "serving-2"]
    for command in commands.values():
        resolve(command)


def test_the_dockerfile_entry_point_is_berth_and_its_command_a_real_one() -> None:
    entrypoint = re.findall(r"^ENTRYPOINT (.+)$", DOCKERFILE, flags=re.MULTILINE)
    assert [yaml.safe_load(e) for e in entrypoint] == [["berth"]]
    (cmd,) = re.findall(r"^CMD (.+)$", DOCKERFILE, flags=re.MULTILINE)
    resolve(yaml.safe_load(cmd))


def test_the_dockerfile_is_multi_stage_slim_and_unprivileged() -> None:
    stages = re.findall(r"^FROM (\S+)(?: AS (\w+))?", DOCKERFILE, flags=re.MULTILINE)
    assert len(stages) == 2
    assert "slim" in re.search(r"ARG PYTHON_IMAGE=(\S+)", DOCKERFILE).group(1)  # type: ignore[union-attr]
    runtime = DOCKERFILE.split("\nFROM ")[-1]
    assert "COPY --from=build /opt/berth /opt/berth" in runtime
    assert re.search(r"^USER berth$", runtime, flags=re.MULTILINE)
    assert not re.search(r"gcc|build-essential|apt-get install", runtime)


# --- ports, URLs and health ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The apps each command runs, built but never started."""
    data = tmp_path_factory.mktemp("compose")
    return {
        "registry": create_registry_app(RegistrySettings(data_dir=data)),
        "serve": create_serving_app(ServingSettings()),
    }


def answers(app: Any, path: str) -> int:
    """The status `app` gives a GET of `path` (a route exists unless it is 404)."""

    async def get() -> int:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://compose") as client:
            return (await client.get(path)).status_code

    return asyncio.run(get())


def test_ports_healthchecks_and_urls_agree(apps: dict[str, Any]) -> None:
    for name, command in berth_services():
        if command[0] not in ("registry", "serve"):
            continue
        service = SERVICES[name]
        port = port_option(command)
        assert command[command.index("--host") + 1] == "0.0.0.0"
        published = [str(p).rsplit(":", 1)[1] for p in service["ports"]]
        assert published == [str(port)], f"{name} publishes {published}, listens on {port}"
        health = urlsplit(healthcheck_url(service))
        assert health.port == port, name
        # A healthcheck carries no token: the path must exist and be public.
        status = answers(apps[command[0]], health.path)
        assert status not in (401, 403, 404), f"{name}: {health.path} answers {status}"

    registry_port = port_option(berth_command(SERVICES["registry"]) or [])
    for name in ("serving-1", "serving-2"):
        url = urlsplit(environment(SERVICES[name])["BERTH_REGISTRY_URL"])
        assert (url.hostname, url.port) == ("registry", registry_port)
    host_ports = [str(p).split(":")[0] for s in SERVICES.values() for p in s.get("ports", [])]
    assert len(host_ports) == len(set(host_ports)), host_ports


def test_the_registry_reaches_postgres_and_s3_as_compose_names_them() -> None:
    env = environment(SERVICES["registry"])
    database = urlsplit(env["BERTH_DATABASE_URL"])
    postgres = environment(SERVICES["postgres"])
    assert database.hostname == "postgres"
    assert database.username == postgres["POSTGRES_USER"]
    assert database.path == "/" + postgres["POSTGRES_DB"]
    assert database.password == postgres["POSTGRES_PASSWORD"]
    endpoint = urlsplit(env["AWS_ENDPOINT_URL"])
    assert endpoint.hostname == "s3"
    assert str(endpoint.port) in healthcheck_url(SERVICES["s3"])
    assert env["AWS_ACCESS_KEY_ID"] == environment(SERVICES["s3"])["AWS_ACCESS_KEY_ID"]
    for name in ("migrate", "tokens"):
        assert environment(SERVICES[name])["BERTH_DATABASE_URL"] == env["BERTH_DATABASE_URL"]


def test_the_store_is_pinned_by_digest() -> None:
    image = SERVICES["s3"]["image"]
    assert re.fullmatch(r"chrislusf/seaweedfs@sha256:[0-9a-f]{64}", image), image


def test_start_order_is_gated_on_health_and_completion() -> None:
    conditions = {
        (name, dependency): spec["condition"]
        for name, service in SERVICES.items()
        for dependency, spec in (service.get("depends_on") or {}).items()
    }
    for (name, dependency), condition in conditions.items():
        assert dependency in SERVICES, f"{name} depends on unknown {dependency}"
        if condition == "service_healthy":
            assert "healthcheck" in SERVICES[dependency], dependency
        else:
            assert condition == "service_completed_successfully", (name, condition)
            assert SERVICES[dependency].get("restart") == "no", dependency
    expected = {
        ("migrate", "postgres"): "service_healthy",
        ("bucket", "s3"): "service_healthy",
        ("tokens", "migrate"): "service_completed_successfully",
        ("registry", "postgres"): "service_healthy",
        ("registry", "s3"): "service_healthy",
        ("registry", "bucket"): "service_completed_successfully",
        ("registry", "migrate"): "service_completed_successfully",
        ("serving-1", "registry"): "service_healthy",
        ("serving-2", "registry"): "service_healthy",
    }
    assert {k: conditions.get(k) for k in expected} == expected
    for name in ("postgres", "s3", "registry", "serving-1", "serving-2"):
        assert "healthcheck" in SERVICES[name], name


def test_serving_reads_the_token_the_bootstrap_writes() -> None:
    tokens = SERVICES["tokens"]
    directory = tokens["command"][tokens["command"].index("--dir") + 1]
    volume = next(v for v in tokens["volumes"] if v.endswith(":" + directory))
    for name in ("serving-1", "serving-2"):
        service = SERVICES[name]
        command = service["command"]
        token_file = command[command.index("--registry-token-file") + 1]
        assert token_file == f"{directory}/serving-token"
        assert f"{volume}:ro" in service["volumes"]


# --- the bucket one-shot, run for real against S3 (moto) ----------------------------------------


def test_the_bucket_one_shot_creates_the_registry_bucket_idempotently(s3_endpoint: str) -> None:
    service = SERVICES["bucket"]
    assert service["entrypoint"] == ["python", "-c"]
    (script,) = service["command"]
    # The container's environment, with the store at moto's address instead of `s3`.
    env = {**os.environ, **environment(service), "AWS_ENDPOINT_URL": s3_endpoint}
    for _ in range(2):  # a restart of the stack runs it again
        done = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr
    wanted = urlsplit(environment(SERVICES["registry"])["BERTH_ARTIFACT_STORE"]).hostname
    names = {b["Name"] for b in boto3.client("s3").list_buckets()["Buckets"]}
    assert wanted in names


def test_client_settings_are_prefixed_like_the_services() -> None:
    assert env_names(ClientSettings) >= {"BERTH_URL", "BERTH_TOKEN", "BERTH_DATA_DIR"}
