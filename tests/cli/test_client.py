"""`berth.Client` against a real `berth up`: typed answers and typed errors."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

import berth
from registry.schemas import VersionOut
from tests.cli.conftest import Instance
from tests.cli.factories import Frame
from tests.fixtures.servers import free_port

NAMES = ["age", "income", "tenure"]


def unnamed_classifier() -> LogisticRegression:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(60, 3))
    return LogisticRegression().fit(x, np.where(x[:, 1] > 0, 1, 0))


def named_classifier() -> LogisticRegression:
    model = unnamed_classifier()
    # What scikit-learn sets when it was fitted on a DataFrame with these columns.
    model.feature_names_in_ = np.array(NAMES, dtype=object)
    return model


@pytest.fixture
def client(instance: Instance) -> Iterator[berth.Client]:
    with berth.Client(instance.url, token=instance.admin_token) as client:
        yield client


@pytest.fixture
def named(client: berth.Client) -> VersionOut:
    sample = Frame({"age": [0.1, -1.0], "income": [1.5, -0.5], "tenure": [0.0, 2.0]})
    return client.push(
        named_classifier(), "named", sample=sample, metrics={"auc": 0.8}, tags={"kind": "named"}
    )


def test_push_an_estimator_with_named_features(named: VersionOut) -> None:
    assert named.signature is not None
    assert named.signature.named is True
    assert [f.name for f in named.signature.inputs] == NAMES
    assert named.example is not None
    assert set(named.example.outputs) == {"predict", "predict_proba"}
    assert named.lineage is not None
    assert "scikit-learn" in named.lineage.environment


def test_promote_wait_then_predict_by_name_with_a_dataframe(
    client: berth.Client, named: VersionOut
) -> None:
    out = client.promote("named", named.version, reason="named", wait=30)
    assert out.rollout is not None
    assert out.rollout.converged
    frame = Frame({"tenure": [0.0], "age": [1.0], "income": [3.0]})  # columns in any order
    answer = client.predict("named", frame, outputs=["predict", "predict_proba"])
    assert answer.version == named.version
    assert answer.alias == "production"
    expected = unnamed_classifier().predict(np.array([[1.0, 3.0, 0.0]]))
    assert answer.predictions == expected.tolist()
    assert len(answer.outputs["predict_proba"][0]) == 2


def test_typed_errors_carry_the_api_code(client: berth.Client, named: VersionOut) -> None:
    with pytest.raises(berth.NotFound) as missing:
        client.version("no-such-model", 1)
    assert missing.value.code == "model_not_found"
    assert missing.value.status == 404

    current = client.promote("named", named.version, alias="canary")
    with pytest.raises(berth.Conflict) as stale:
        client.promote("named", named.version, alias="canary", if_match=current.revision + 5)
    assert stale.value.code == "revision_mismatch"

    with pytest.raises(berth.InvalidInput):
        client.split("named", {named.version: 0})

    with pytest.raises(berth.InvalidInput) as bad_rows:
        client.predict("named", [[1.0]], version=named.version)
    assert bad_rows.value.status == 422


def test_waiting_for_a_revision_nobody_serves_times_out(
    client: berth.Client, named: VersionOut
) -> None:
    out = client.promote("named", named.version, alias="later")
    with pytest.raises(berth.RolloutTimeout, match=r"is recorded, but after 0\.5 s"):
        client.wait_for_rollout("named", "later", out.revision + 1, timeout=0.5)


def test_authentication_errors(instance: Instance) -> None:
    with berth.Client(instance.url) as anonymous, pytest.raises(berth.Unauthenticated):
        anonymous.models()
    with (
        berth.Client(instance.url, token="berth_wrong") as wrong,
        pytest.raises(berth.Unauthenticated, match="not valid"),
    ):
        wrong.models()


def test_an_unreachable_registry() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with berth.Client(url) as client, pytest.raises(berth.Unreachable) as error:
        client.models()
    assert error.value.message.startswith(f"cannot reach the registry at {url}")
