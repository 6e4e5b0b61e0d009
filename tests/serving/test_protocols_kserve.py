"""KServe V1: `POST /v1/models/{name}:predict` and model readiness, on the wire."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from tests.serving.conftest import ServingClient, eventually
from tests.serving.factories import FEATURES, artifact, classifier, metadata, regressor
from tests.serving.fakes import FakeRegistry

Start = Callable[..., ServingClient]

X = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]])


def test_predict_with_instances_answers_predictions(
    churn: FakeRegistry, start_serving: Start
) -> None:
    serving = start_serving()
    eventually(lambda: serving.get("/readyz").status_code == 200)
    expected = pytest.approx((X.sum(axis=1) + 1).tolist())
    for instances in (X.tolist(), [dict(zip(FEATURES, r, strict=True)) for r in X.tolist()]):
        response = serving.post("/v1/models/churn:predict", json={"instances": instances})
        assert response.status_code == 200, response.text
        assert response.json() == {"predictions": expected}
        assert response.headers["X-Model-Version"] == "1"


def test_predict_follows_the_split_and_the_routing_key(
    churn: FakeRegistry, start_serving: Start
) -> None:
    churn.set_alias("churn", "production", variants=[(1, 50), (2, 50)])
    serving = start_serving()
    eventually(lambda: serving.get("/readyz").status_code == 200)

    def version(key: str) -> str:
        response = serving.post(
            "/v1/models/churn:predict",
            json={"instances": X.tolist()},
            headers={"X-Routing-Key": key},
        )
        return response.headers["X-Model-Version"]

    seen = {f"user-{i}": version(f"user-{i}") for i in range(40)}
    assert set(seen.values()) == {"1", "2"}
    assert all(version(key) == v for key, v in seen.items())


def test_other_outputs_answer_beside_predictions(fake: FakeRegistry, start_serving: Start) -> None:
    estimator = classifier()
    fake.add_version(
        "spam", artifact(estimator), metadata(estimator, methods=("predict", "predict_proba"))
    )
    fake.set_alias("spam", "production", 1)
    serving = start_serving()
    eventually(lambda: serving.get("/readyz").status_code == 200)
    body = {"instances": X.tolist(), "outputs": ["predict", "predict_proba"]}
    answer = serving.post("/v1/models/spam:predict", json=body).json()
    assert answer["predictions"] == estimator.predict(X).tolist()
    assert np.allclose(answer["predict_proba"], estimator.predict_proba(X))


def test_readiness_and_the_model_list(fake: FakeRegistry, start_serving: Start) -> None:
    serving = start_serving()
    eventually(lambda: serving.get("/readyz").status_code == 200)
    missing = serving.get("/v1/models/churn")
    assert missing.status_code == 404
    assert missing.json() == {"error": "model 'churn' does not exist or has no aliases"}
    assert serving.get("/v1/models").json() == {"models": []}

    estimator = regressor()
    fake.add_version("churn", artifact(estimator), metadata(estimator))
    fake.set_alias("churn", "production", 1)
    eventually(lambda: serving.get("/v1/models/churn").status_code == 200)
    assert serving.get("/v1/models/churn").json() == {"name": "churn", "ready": True}
    assert serving.get("/v1/models").json() == {"models": ["churn"]}


def test_errors_are_kserves_shape(churn: FakeRegistry, start_serving: Start) -> None:
    serving = start_serving()
    eventually(lambda: serving.get("/readyz").status_code == 200)
    unknown = serving.post("/v1/models/nope:predict", json={"instances": X.tolist()})
    assert unknown.status_code == 404
    assert unknown.json() == {"error": "model 'nope' does not exist or has no aliases"}
    short = serving.post("/v1/models/churn:predict", json={"instances": [[1.0, 2.0]]})
    assert short.status_code == 422
    assert short.json() == {"error": "row 0 has 2 values, expected 3 ('age', 'income', 'tenure')"}
