"""Serving's OpenAPI documents the predict routes, and the documented contract is the real one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from serving.schemas import PredictRequest, PredictResponse
from tests.serving.conftest import ServingClient, eventually
from tests.serving.factories import FEATURES, artifact, classifier, metadata, row
from tests.serving.fakes import FakeRegistry

Start = Callable[..., ServingClient]

BODIES: list[dict[str, Any]] = [
    {"inputs": [row()]},
    {"inputs": [dict.fromkeys(FEATURES, 1.0)]},
    {"inputs": {name: [1.0] for name in FEATURES}},
    {"instances": [row()]},
    {"dataframe_split": {"columns": list(FEATURES), "data": [row()]}},
    {"dataframe_records": [dict.fromkeys(FEATURES, 1.0)]},
    {"input": row()},
    {"input": row(), "outputs": ["predict", "predict_proba"]},
]


def test_the_schema_documents_every_predict_route(fake: FakeRegistry, start_serving: Start) -> None:
    client = start_serving()
    schema = client.get("/openapi.json").json()
    for path in (
        "/models/{name}/predict",
        "/models/{name}/aliases/{alias}/predict",
        "/models/{name}/versions/{version}/predict",
    ):
        operation = schema["paths"][path]["post"]
        body = operation["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": "#/components/schemas/PredictRequest"}
        assert {"200", "404", "422"} <= set(operation["responses"])
    assert "PredictRequest" in schema["components"]["schemas"]


@pytest.mark.parametrize("body", BODIES)
def test_every_documented_body_shape_is_accepted_and_answered_as_documented(
    fake: FakeRegistry, start_serving: Start, body: dict[str, Any]
) -> None:
    PredictRequest.model_validate(body)  # the documented contract admits it ...
    fake.add_version(
        "churn",
        artifact(classifier()),
        metadata(classifier(), methods=("predict", "predict_proba")),
    )
    fake.set_alias("churn", "production", 1)
    client = start_serving()
    eventually(lambda: client.get("/readyz").status_code == 200)
    response = client.post("/models/churn/predict", json=body)
    assert response.status_code == 200, response.text  # ... and so does the handler
    answer = PredictResponse.model_validate(response.json())
    assert answer.version == 1
    assert len(answer.predictions) == 1
