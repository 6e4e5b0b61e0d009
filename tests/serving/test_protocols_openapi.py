"""Serving's OpenAPI documents every protocol route, and the documented shapes are the real ones."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from openapi_spec_validator import validate

from serving.protocols.schemas import (
    InferenceRequest,
    InferenceResponse,
    MlflowError,
    ModelMetadata,
    OipError,
    PredictionsResponse,
)
from tests.serving.conftest import ServingClient, eventually
from tests.serving.factories import row
from tests.serving.fakes import FakeRegistry

Start = Callable[..., ServingClient]

PROTOCOL_ROUTES = {
    "/v2": "get",
    "/v2/health/live": "get",
    "/v2/health/ready": "get",
    "/v2/models/{name}": "get",
    "/v2/models/{name}/versions/{version}": "get",
    "/v2/models/{name}/ready": "get",
    "/v2/models/{name}/versions/{version}/ready": "get",
    "/v2/models/{name}/infer": "post",
    "/v2/models/{name}/versions/{version}/infer": "post",
    "/v1/models": "get",
    "/v1/models/{name}": "get",
    "/v1/models/{name}:predict": "post",
    "/invocations": "post",
    "/models/{name}/invocations": "post",
    "/ping": "get",
    "/version": "get",
}


def test_every_protocol_route_is_documented_in_a_valid_schema(
    fake: FakeRegistry, start_serving: Start
) -> None:
    schema = start_serving().get("/openapi.json").json()
    validate(schema)
    for path, method in PROTOCOL_ROUTES.items():
        assert method in schema["paths"].get(path, {}), path
    infer = schema["paths"]["/v2/models/{name}/infer"]["post"]
    assert set(infer["requestBody"]["content"]) == {
        "application/json",
        "application/octet-stream",
    }
    assert {p["name"] for p in infer["parameters"]} >= {
        "name",
        "X-Routing-Key",
        "Inference-Header-Content-Length",
    }
    assert "text/csv" in schema["paths"]["/invocations"]["post"]["requestBody"]["content"]
    assert "InferenceRequest" in schema["components"]["schemas"]


def test_documented_shapes_are_what_the_handlers_take_and_give(
    churn: FakeRegistry, start_serving: Start
) -> None:
    serving = start_serving(default_model="churn")
    eventually(lambda: serving.get("/ping").status_code == 200)
    request = {
        "id": "1",
        "inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP64", "data": row()}],
        "outputs": [{"name": "predict"}],
    }
    InferenceRequest.model_validate(request)
    answer = serving.post("/v2/models/churn/infer", json=request)
    assert InferenceResponse.model_validate(answer.json()).model_version == "1"
    ModelMetadata.model_validate(serving.get("/v2/models/churn").json())
    OipError.model_validate(serving.post("/v2/models/nope/infer", json=request).json())

    for path in ("/v1/models/churn:predict", "/invocations", "/models/churn/invocations"):
        response = serving.post(path, json={"instances": [row()]})
        assert PredictionsResponse.model_validate(response.json()).predictions == [
            pytest.approx(4.0)
        ]
    MlflowError.model_validate(serving.post("/models/nope/invocations", json={}).json())
