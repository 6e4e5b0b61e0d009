"""`berth up`: one process, both services, one port; tokens; the binding rule."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import Scope

from berth.allinone import AllInOne
from registry.config import RegistrySettings
from registry.main import create_app as create_registry_app
from serving.config import ServingSettings
from serving.main import create_app as create_serving_app
from tests.cli.conftest import CLI_ENV, Instance, berth, start_berth_up
from tests.fixtures.servers import free_port


@pytest.fixture(scope="module")
def allinone(tmp_path_factory: pytest.TempPathFactory) -> AllInOne:
    """The composition, built but not started."""
    data = tmp_path_factory.mktemp("allinone")
    return AllInOne(
        create_registry_app(RegistrySettings(data_dir=data)),
        create_serving_app(ServingSettings()),
    )


def scope(path: str, method: str = "GET") -> Scope:
    return {"type": "http", "path": path, "method": method, "root_path": "", "headers": []}


@pytest.mark.parametrize(
    ("path", "method", "owner"),
    [
        ("/models/churn/predict", "POST", "serving"),
        ("/models/churn/aliases/staging/predict", "POST", "serving"),
        ("/models/churn/versions/3/predict", "POST", "serving"),
        ("/models/churn/predict", "GET", "serving"),  # serving answers 405 itself
        ("/status", "GET", "serving"),
        ("/metrics", "GET", "serving"),
        ("/api/v1/models", "GET", "registry"),
        ("/api/v1/models/churn/versions", "POST", "registry"),
        ("/healthz", "GET", "front"),
        ("/readyz", "GET", "front"),
        ("/docs", "GET", "front"),
        ("/openapi.json", "GET", "front"),
        ("/nowhere", "GET", "registry"),  # the registry's 404, in the one error shape
    ],
)
def test_each_request_goes_to_the_app_that_owns_it(
    allinone: AllInOne, path: str, method: str, owner: str
) -> None:
    assert allinone.route(scope(path, method)) is getattr(allinone, owner)


def test_the_reference_covers_both_services(allinone: AllInOne) -> None:
    schema: dict[str, Any] = allinone.openapi()
    paths = schema["paths"]
    assert "/api/v1/models/{name}/versions" in paths
    assert "/api/v1/models/{name}/aliases/{alias}/rollout" in paths
    for predict in (
        "/models/{name}/predict",
        "/models/{name}/aliases/{alias}/predict",
        "/models/{name}/versions/{version}/predict",
    ):
        assert "post" in paths[predict], predict
    assert "/status" in paths
    assert "/metrics" in paths
    refs = {"ErrorBody", "PredictRequest", "PredictResponse"}
    assert refs <= set(schema["components"]["schemas"])


# --- the real process ---------------------------------------------------------------------------


def test_one_port_answers_for_both_services(instance: Instance) -> None:
    with httpx.Client(base_url=instance.url, timeout=10) as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        ready = http.get("/readyz").json()
        assert ready["checks"] == {"database": "ok", "artifact_store": "ok", "serving": "ok"}
        assert http.get("/docs").status_code == 200
        schema = http.get("/openapi.json").json()
        assert "/api/v1/models" in schema["paths"]
        assert "/models/{name}/predict" in schema["paths"]
        assert http.get("/status").status_code == 401  # serving checks tokens too
        auth = {"Authorization": f"Bearer {instance.admin_token}"}
        status = http.get("/status", headers=auth).json()
        assert status["feed"]["connected"] is True
        metrics = http.get("/metrics", headers=auth)
        assert metrics.status_code == 200
        assert "berth_serving_" in metrics.text
        missing = http.get("/api/v1/nowhere")
        assert missing.status_code == 404
        assert set(missing.json()) == {"error", "message", "detail"}
        unauthenticated = http.get("/api/v1/models")
        assert unauthenticated.status_code == 401
        assert unauthenticated.json()["error"] == "unauthenticated"


def test_the_admin_token_is_private_and_serving_has_a_reader_token(instance: Instance) -> None:
    for name in ("admin-token", "serving-token"):
        mode = stat.S_IMODE((instance.data_dir / name).stat().st_mode)
        assert mode == 0o600, (name, oct(mode))
    auth = {"Authorization": f"Bearer {instance.admin_token}"}
    tokens = httpx.get(f"{instance.url}/api/v1/tokens", headers=auth, timeout=10).json()
    roles = {t["name"]: t["role"] for t in tokens}
    assert roles["admin"] == "admin"
    assert roles["serving"] == "reader"


def test_a_restart_keeps_the_data_and_the_tokens(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = start_berth_up(data, tmp_path / "first.log")
    try:
        admin = (data / "admin-token").read_text()
        serving = (data / "serving-token").read_text()
        env = {**CLI_ENV, "BERTH_URL": first.url, "BERTH_DATA_DIR": str(data)}
        created = berth("token", "create", "kept", "--json", env=env)
        assert created.exit_code == 0, created.stderr
    finally:
        first.stop()
    second = start_berth_up(data, tmp_path / "second.log")
    try:
        assert (data / "admin-token").read_text() == admin
        assert (data / "serving-token").read_text() == serving
        env = {**CLI_ENV, "BERTH_URL": second.url, "BERTH_DATA_DIR": str(data)}
        listed = berth("token", "list", env=env)
        assert listed.exit_code == 0, listed.stderr
        assert "kept" in listed.stdout
    finally:
        second.stop()


def test_auth_off_is_refused_beyond_loopback(tmp_path: Path) -> None:
    env = {**CLI_ENV, "BERTH_AUTH": "false"}
    args = ("up", "--data-dir", str(tmp_path), "--host", "0.0.0.0", "--port", str(free_port()))
    result = berth(*args, env=env, timeout=60)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: refusing to listen on 0.0.0.0 with authentication off")
    assert not (tmp_path / "berth.db").exists()


def test_a_port_in_use_is_one_line(instance: Instance, tmp_path: Path) -> None:
    port = instance.url.rsplit(":", 1)[1]
    result = berth("up", "--data-dir", str(tmp_path), "--port", port, env=CLI_ENV, timeout=60)
    assert result.exit_code == 1
    assert result.stderr.strip().startswith(f"error: cannot listen on 127.0.0.1:{port}")
    assert "Traceback" not in result.stderr


def test_serving_alone_refuses_auth_off_beyond_loopback(tmp_path: Path) -> None:
    env = {**CLI_ENV, "BERTH_AUTH": "false"}
    result = berth("serve", "--host", "0.0.0.0", "--port", str(free_port()), env=env, timeout=60)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: refusing to listen on 0.0.0.0 with authentication off")
