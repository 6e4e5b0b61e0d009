"""MLflow's scoring protocol, proven with MLflow's own `ScoringServerClient` (mlflow-skinny).

The client is the one `mlflow.pyfunc` uses against `mlflow models serve`: it knows only a host
and a port and calls `/ping`, `/version` and `/invocations` there.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.serving.conftest import ServingClient, eventually
from tests.serving.factories import FEATURES, artifact, metadata, regressor
from tests.serving.fakes import FakeRegistry

Start = Callable[..., ServingClient]

X = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]])


@pytest.fixture
def scoring_client(monkeypatch: pytest.MonkeyPatch) -> type[Any]:
    # MLflow would otherwise report usage over the network; it also warns at import about its
    # own type hints, which the suite's warnings-as-errors would turn into a failure.
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r".*Any type hint is inferred", category=UserWarning
        )
        from mlflow.pyfunc.scoring_server.client import ScoringServerClient
    return ScoringServerClient


def test_mlflow_scoring_client_scores_a_berth_model_unchanged(
    churn: FakeRegistry, start_serving: Start, scoring_client: type[Any]
) -> None:
    serving = start_serving(default_model="churn")
    client = scoring_client(serving.base_url.host, serving.base_url.port)
    client.wait_server_ready(timeout=30)
    assert client.get_version() == version("berth")

    frame = pd.DataFrame(X, columns=list(FEATURES))
    for data in (frame, X, frame[list(reversed(FEATURES))]):
        response = client.invoke(data)
        predictions = response.get_predictions(predictions_format="ndarray")
        assert predictions == pytest.approx(X.sum(axis=1) + 1)

    with_params = client.invoke(frame, params={"temperature": 0.5})
    assert with_params.get_predictions(predictions_format="ndarray") == pytest.approx(
        X.sum(axis=1) + 1
    )


def test_mlflow_client_follows_a_promotion(
    churn: FakeRegistry, start_serving: Start, scoring_client: type[Any]
) -> None:
    serving = start_serving(default_model="churn")
    client = scoring_client(serving.base_url.host, serving.base_url.port)
    client.wait_server_ready(timeout=30)
    churn.set_alias("churn", "production", 2)

    def answers_v2() -> bool:
        predictions = client.invoke(X).get_predictions(predictions_format="ndarray")
        return bool(np.allclose(predictions, X.sum(axis=1) + 2))

    eventually(answers_v2)


def test_ping_waits_for_the_default_model(fake: FakeRegistry, start_serving: Start) -> None:
    serving = start_serving(default_model="churn")
    eventually(lambda: serving.get("/readyz").status_code == 200)
    assert serving.get("/ping").status_code == 503
    estimator = regressor(offset=1)
    fake.add_version("churn", artifact(estimator), metadata(estimator))
    fake.set_alias("churn", "production", 1)
    eventually(lambda: serving.get("/ping").status_code == 200)
    assert serving.get("/health").status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"dataframe_split": {"columns": list(FEATURES), "data": X.tolist()}},
        {"dataframe_split": {"columns": list(FEATURES), "data": X.tolist(), "index": [0, 1]}},
        {"dataframe_records": [dict(zip(FEATURES, row, strict=True)) for row in X.tolist()]},
        {"instances": X.tolist()},
        {"inputs": {f: X[:, j].tolist() for j, f in enumerate(FEATURES)}},
    ],
    ids=["split", "split-index", "records", "instances", "inputs-columns"],
)
def test_per_model_invocations_take_mlflows_json_keys(
    churn: FakeRegistry, start_serving: Start, body: dict[str, Any]
) -> None:
    serving = start_serving()
    eventually(lambda: serving.get("/readyz").status_code == 200)
    response = serving.post("/models/churn/invocations", json=body)
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": pytest.approx((X.sum(axis=1) + 1).tolist())}
    assert response.headers["X-Model-Version"] == "1"


def test_csv_bodies_on_invocations_and_on_berths_own_predict(
    churn: FakeRegistry, start_serving: Start
) -> None:
    serving = start_serving(default_model="churn")
    eventually(lambda: serving.get("/ping").status_code == 200)
    # Columns in another order than the signature, as a DataFrame's to_csv may write them.
    csv = pd.DataFrame(X, columns=list(FEATURES))[["tenure", "age", "income"]].to_csv(index=False)
    headers = {"Content-Type": "text/csv; charset=utf-8"}
    expected = pytest.approx((X.sum(axis=1) + 1).tolist())
    for path in ("/invocations", "/models/churn/invocations"):
        response = serving.post(path, content=csv, headers=headers)
        assert response.status_code == 200, response.text
        assert response.json() == {"predictions": expected}
    own = serving.post("/models/churn/versions/2/predict", content=csv, headers=headers)
    assert own.json() == {
        "model": "churn",
        "version": 2,
        "predictions": pytest.approx((X.sum(axis=1) + 2).tolist()),
    }


@pytest.mark.parametrize(
    ("csv", "status", "says"),
    [
        ("age,income\n1,2\n", 422, "columns lack features 'tenure'"),
        ("age,income,tenure\n1,2\n", 422, "CSV row 0 has 2 values"),
        ("age,income,tenure\n1,x,3\n", 422, "feature 'income': expected float64, got string"),
        ("age,income,tenure\n", 422, "header row"),
    ],
)
def test_bad_csv_is_refused_in_mlflows_error_shape(
    churn: FakeRegistry, start_serving: Start, csv: str, status: int, says: str
) -> None:
    serving = start_serving(default_model="churn")
    eventually(lambda: serving.get("/ping").status_code == 200)
    response = serving.post("/invocations", content=csv, headers={"Content-Type": "text/csv"})
    assert response.status_code == status
    body = response.json()
    assert body["error_code"] == "BAD_REQUEST"
    assert says in body["message"]


def test_invocations_without_a_default_model_or_for_an_unknown_one(
    churn: FakeRegistry, start_serving: Start
) -> None:
    serving = start_serving()
    eventually(lambda: serving.get("/readyz").status_code == 200)
    response = serving.post("/invocations", json={"instances": X.tolist()})
    assert response.status_code == 404
    assert response.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    assert "BERTH_DEFAULT_MODEL" in response.json()["message"]
    unknown = serving.post("/models/nope/invocations", json={"instances": X.tolist()})
    assert unknown.status_code == 404
    assert unknown.json() == {
        "error_code": "RESOURCE_DOES_NOT_EXIST",
        "message": "model 'nope' does not exist or has no aliases",
    }
