"""Every protocol's model routes ask for the same token as Berth's own predict; probes do not."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from registry.schemas import Role
from tests.conftest import RunningRegistry
from tests.fixtures.factories import joblib_bytes, linear_model, promote, upload_ok
from tests.fixtures.waiting import eventually
from tests.security.conftest import RunningServing, make_token

ROW = [0.1, 0.2, 0.3, 0.4]
V2 = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64", "data": ROW}]}
V1 = {"instances": [ROW]}


@pytest.fixture
def stack(
    secured_registry: RunningRegistry, start_serving: Any
) -> tuple[RunningServing, dict[str, str]]:
    registry = secured_registry
    tokens = {role.value: make_token(registry, role)[1] for role in (Role.reader, Role.publisher)}
    tokens["scoped"] = make_token(registry, Role.reader, name="fraud-only", models=["fraud"])[1]
    publisher = registry.client(tokens["publisher"])
    upload_ok(publisher, "churn", joblib_bytes(linear_model()))
    assert promote(publisher, "churn", 1).status_code == 200
    serving = start_serving(
        registry, registry_token=tokens["reader"], auth=True, default_model="churn"
    )

    def ready() -> bool:
        with serving.client(tokens["reader"]) as client:
            return client.post("/v2/models/churn/infer", json=V2).status_code == 200

    eventually(ready, within=30)
    return serving, tokens


CALLS = [
    ("GET", "/v2", None, "error"),
    ("GET", "/v2/models/churn", None, "error"),
    ("GET", "/v2/models/churn/ready", None, "error"),
    ("GET", "/v2/models/churn/versions/1", None, "error"),
    ("POST", "/v2/models/churn/infer", V2, "error"),
    ("POST", "/v2/models/churn/versions/1/infer", V2, "error"),
    ("GET", "/v1/models", None, "error"),
    ("GET", "/v1/models/churn", None, "error"),
    ("POST", "/v1/models/churn:predict", V1, "error"),
    ("POST", "/invocations", V1, "error_code"),
    ("POST", "/models/churn/invocations", V1, "error_code"),
    ("GET", "/version", None, "error_code"),
]


def test_without_a_token_every_protocol_route_is_401_in_its_own_shape(
    stack: tuple[RunningServing, dict[str, str]],
) -> None:
    serving, _ = stack
    with serving.client() as anonymous:
        for method, path, body, key in CALLS:
            response = anonymous.request(method, path, json=body)
            assert response.status_code == 401, (path, response.text)
            assert response.headers["www-authenticate"] == "Bearer"
            assert key in response.json(), path
        for probe in ("/v2/health/live", "/v2/health/ready", "/ping", "/health"):
            assert anonymous.get(probe).status_code == 200, probe


def test_a_token_for_other_models_cannot_reach_this_one_by_any_protocol(
    stack: tuple[RunningServing, dict[str, str]],
) -> None:
    serving, tokens = stack
    with serving.client(tokens["scoped"]) as scoped:
        for method, path, body, _ in CALLS:
            response = scoped.request(method, path, json=body)
            if "churn" in path or path == "/invocations":
                # /invocations scores the default model, so the token is checked against it.
                assert response.status_code == 403, (path, response.text)
            else:
                assert response.status_code == 200, (path, response.text)
    with serving.client(tokens["reader"]) as reader:
        for method, path, body, _ in CALLS:
            assert reader.request(method, path, json=body).status_code == 200, path


def test_tritonclient_passes_the_token_in_its_headers(
    stack: tuple[RunningServing, dict[str, str]],
) -> None:
    serving, tokens = stack
    client = triton.InferenceServerClient(serving.url.removeprefix("http://"))
    try:
        tensor = triton.InferInput("input", [1, 4], "FP64")
        tensor.set_data_from_numpy(np.array([ROW]))
        with pytest.raises(InferenceServerException) as refused:
            client.infer("churn", [tensor])
        assert refused.value.status() == "401"
        auth = {"Authorization": f"Bearer {tokens['reader']}"}
        result = client.infer("churn", [tensor], headers=auth)
        assert result.get_response()["model_version"] == "1"
        assert client.is_server_ready()  # a probe: no token needed
    finally:
        client.close()
