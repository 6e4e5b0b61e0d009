"""The Open Inference Protocol (V2 REST), proven with NVIDIA's own client, `tritonclient[http]`.

Serving runs under uvicorn on a real port against the in-memory fake registry; the client is
used exactly as its documentation shows, binary tensor data (its default) included.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from registry.schemas import DType, Example, VersionMetadata
from tests.serving.conftest import ServingClient, eventually
from tests.serving.factories import FEATURES, artifact, classifier, metadata, regressor, signature
from tests.serving.fakes import FakeRegistry

Start = Callable[..., ServingClient]

X = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 0.0], [0.0, 0.0, 0.0]])
"""Three rows; churn v1 predicts sum(x) + 1, v2 sum(x) + 2."""


def push(fake: FakeRegistry, estimator: Any, name: str = "churn", **meta: Any) -> int:
    return fake.add_version(name, artifact(estimator), metadata(estimator, **meta))


@pytest.fixture
def triton_for(start_serving: Start) -> Iterator[Callable[..., tuple[Any, ServingClient]]]:
    clients: list[Any] = []

    def connect(**settings: Any) -> tuple[Any, ServingClient]:
        serving = start_serving(**settings)
        client = triton.InferenceServerClient(url=serving.base_url.netloc.decode())
        clients.append(client)
        eventually(client.is_server_ready)
        return client, serving

    yield connect
    for client in clients:
        client.close()


def matrix(x: np.ndarray[Any, Any], datatype: str, *, binary: bool = True) -> Any:
    tensor = triton.InferInput("input", list(x.shape), datatype)
    tensor.set_data_from_numpy(x, binary_data=binary)
    return tensor


def columns(x: np.ndarray[Any, Any], datatype: str, *, binary: bool = True) -> list[Any]:
    tensors = []
    for j, name in enumerate(FEATURES):
        tensor = triton.InferInput(name, [x.shape[0]], datatype)
        tensor.set_data_from_numpy(np.ascontiguousarray(x[:, j]), binary_data=binary)
        tensors.append(tensor)
    return tensors


def test_server_is_live_and_ready_with_the_binary_extension(
    churn: FakeRegistry, triton_for: Callable[..., tuple[Any, ServingClient]]
) -> None:
    client, serving = triton_for()
    assert client.is_server_live()
    assert client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "berth"
    assert "binary_tensor_data" in meta["extensions"]
    # The bodies too, not only the statuses: the protocol defines them.
    assert serving.get("/v2/health/live").json() == {"live": True}
    assert serving.get("/v2/health/ready").json() == {"ready": True}


def test_model_metadata_describes_the_signature_and_the_outputs(
    churn: FakeRegistry, triton_for: Callable[..., tuple[Any, ServingClient]]
) -> None:
    client, _ = triton_for()
    meta = client.get_model_metadata("churn")
    assert meta["name"] == "churn"
    assert meta["versions"] == ["1"]
    assert meta["platform"] == "sklearn"
    assert meta["inputs"] == [{"name": n, "datatype": "FP64", "shape": [-1]} for n in FEATURES]
    assert meta["outputs"] == [{"name": "predict", "datatype": "FP64", "shape": [-1]}]
    assert meta["parameters"] == {"alias": "production", "version": "1"}

    pinned = client.get_model_metadata("churn", model_version="2")
    assert pinned["versions"] == ["2"]
    assert pinned["parameters"] == {"version": "2"}
    assert client.is_model_ready("churn")
    assert client.is_model_ready("churn", model_version="2")


def test_classifier_metadata_lists_every_output_with_its_datatype(
    fake: FakeRegistry, triton_for: Callable[..., tuple[Any, ServingClient]]
) -> None:
    push(fake, classifier(), "spam", methods=("predict", "predict_proba"))
    fake.set_alias("spam", "production", 1)
    client, _ = triton_for()
    outputs = {o["name"]: o for o in client.get_model_metadata("spam")["outputs"]}
    assert outputs["predict"] == {"name": "predict", "datatype": "INT64", "shape": [-1]}
    assert outputs["predict_proba"] == {
        "name": "predict_proba",
        "datatype": "FP64",
        "shape": [-1, 2],
    }
    assert set(outputs) == {"predict", "predict_proba", "predict_log_proba", "decision_function"}


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("datatype", ["FP64", "FP32", "INT64"])
def test_infer_through_the_default_alias_and_pinned(
    churn: FakeRegistry,
    triton_for: Callable[..., tuple[Any, ServingClient]],
    datatype: str,
    binary: bool,
) -> None:
    client, _ = triton_for()
    x = X.astype(np.int64) if datatype == "INT64" else X
    x = x.astype(np.float32) if datatype == "FP32" else x
    expected = x.astype(np.float64).sum(axis=1)
    outputs = [triton.InferRequestedOutput("predict", binary_data=binary)]

    routed = client.infer("churn", [matrix(x, datatype, binary=binary)], outputs=outputs)
    assert routed.get_response()["model_version"] == "1"
    assert routed.get_response()["model_name"] == "churn"
    assert routed.as_numpy("predict") == pytest.approx(expected + 1)
    answer = routed.get_output("predict")
    assert answer["datatype"] == "FP64"
    assert answer["shape"] == [3]
    assert ("binary_data_size" in answer.get("parameters", {})) is binary

    pinned = client.infer(
        "churn", columns(x, datatype, binary=binary), model_version="2", outputs=outputs
    )
    assert pinned.get_response()["model_version"] == "2"
    assert pinned.as_numpy("predict") == pytest.approx(expected + 2)


def test_infer_with_the_clients_defaults_answers_binary(
    churn: FakeRegistry, triton_for: Callable[..., tuple[Any, ServingClient]]
) -> None:
    """No outputs named: tritonclient asks for every output as binary (`binary_data_output`)."""
    client, _ = triton_for()
    result = client.infer("churn", [matrix(X, "FP64")], request_id="req-7")
    response = result.get_response()
    assert response["id"] == "req-7"
    assert response["model_version"] == "1"
    assert response["outputs"][0]["parameters"]["binary_data_size"] == 3 * 8
    assert result.as_numpy("predict") == pytest.approx(X.sum(axis=1) + 1)


def test_infer_several_outputs_mixing_binary_and_json(
    fake: FakeRegistry, triton_for: Callable[..., tuple[Any, ServingClient]]
) -> None:
    estimator = classifier()
    push(fake, estimator, "spam", methods=("predict", "predict_proba"))
    fake.set_alias("spam", "production", 1)
    client, _ = triton_for()
    result = client.infer(
        "spam",
        [matrix(X, "FP64")],
        outputs=[
            triton.InferRequestedOutput("predict", binary_data=False),
            triton.InferRequestedOutput("predict_proba", binary_data=True),
        ],
    )
    assert result.as_numpy("predict").tolist() == estimator.predict(X).tolist()
    assert result.as_numpy("predict_proba") == pytest.approx(estimator.predict_proba(X))
    assert "data" in result.get_output("predict")
    assert "binary_data_size" in result.get_output("predict_proba")["parameters"]


def test_infer_follows_the_split_and_the_routing_key(
    churn: FakeRegistry, triton_for: Callable[..., tuple[Any, ServingClient]]
) -> None:
    churn.set_alias("churn", "production", variants=[(1, 50), (2, 50)])
    client, serving = triton_for()
    eventually(lambda: serving.runtime.router.table[("churn", "production")].revision == 2)

    def version(key: str) -> str:
        result = client.infer("churn", [matrix(X, "FP64")], headers={"X-Routing-Key": key})
        assert result.as_numpy("predict") == pytest.approx(
            X.sum(axis=1) + int(result.get_response()["model_version"])
        )
        return str(result.get_response()["model_version"])

    seen = {key: version(key) for key in (f"user-{i}" for i in range(40))}
    assert set(seen.values()) == {"1", "2"}
    assert all(version(key) == answered for key, answered in seen.items())
    # Metadata describes the variant the same key lands on.
    for key, answered in list(seen.items())[:10]:
        meta = client.get_model_metadata("churn", headers={"X-Routing-Key": key})
        assert meta["parameters"]["version"] == answered
    assert client.get_model_metadata("churn")["versions"] == ["1", "2"]


def test_int_signature_takes_int64_and_refuses_floats(
    fake: FakeRegistry, triton_for: Callable[..., tuple[Any, ServingClient]]
) -> None:
    estimator = regressor()
    meta = VersionMetadata(
        flavor="sklearn",
        signature=signature(FEATURES, (DType.int64,) * 3),
        example=Example(inputs=[[1, 2, 3]], outputs={"predict": estimator.predict([[1, 2, 3]])}),
    )
    fake.add_version("counts", artifact(estimator), meta)
    fake.set_alias("counts", "production", 1)
    client, _ = triton_for()
    assert client.get_model_metadata("counts")["inputs"][0]["datatype"] == "INT64"

    x = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.int64)
    result = client.infer("counts", columns(x, "INT64"))
    assert result.as_numpy("predict") == pytest.approx(estimator.predict(x))

    with pytest.raises(InferenceServerException) as refused:
        client.infer("counts", [matrix(x.astype(np.float64), "FP64")])
    assert refused.value.status() == "422"
    assert "feature 'age' is int64" in refused.value.message()


def test_unknown_model_and_version_are_404_in_the_protocols_error_shape(
    churn: FakeRegistry, triton_for: Callable[..., tuple[Any, ServingClient]]
) -> None:
    client, serving = triton_for()
    for call in (
        lambda: client.get_model_metadata("nope"),
        lambda: client.get_model_metadata("churn", model_version="9"),
        lambda: client.infer("nope", [matrix(X, "FP64")]),
        lambda: client.infer("churn", [matrix(X, "FP64")], model_version="9"),
    ):
        with pytest.raises(InferenceServerException) as refused:
            call()
        assert refused.value.status() == "404"
    assert not client.is_model_ready("nope")
    assert not client.is_model_ready("churn", model_version="9")

    body = {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]}
    response = serving.post("/v2/models/churn/versions/9/infer", json=body)
    assert response.status_code == 404
    assert response.json() == {"error": "model 'churn' has no version 9"}
    assert serving.post("/v2/models/churn/versions/x/infer", json=body).status_code == 400


def oip_tensor(shape: list[int], datatype: str, data: list[Any], name: str = "input") -> Any:
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


@pytest.mark.parametrize(
    ("tensor", "status", "says"),
    [
        (oip_tensor([1, 3], "FP64", [1, 2]), 400, "holds 3 elements"),
        (oip_tensor([1, 3], "FP128", [1, 2, 3]), 400, "FP128"),
        (oip_tensor([1, 3], "FP64", ["a", "b", "c"]), 400, "must be numbers"),
        (oip_tensor([1, 3], "INT8", [1, 2, 300]), 400, "do not fit INT8"),
        (oip_tensor([1, 2], "FP64", [1, 2]), 422, "[rows, 3]"),
        (oip_tensor([1, 3], "BYTES", ["a", "b", "c"]), 422, "is BYTES; feature 'age' is float64"),
        (oip_tensor([1], "FP64", [1], name="age"), 422, "lack features 'income', 'tenure'"),
        (oip_tensor([1], "FP64", [1], name="height"), 422, "a single tensor is [rows, 3]"),
    ],
)
def test_bad_tensors_are_refused_with_a_message_naming_the_problem(
    churn: FakeRegistry, start_serving: Start, tensor: dict[str, Any], status: int, says: str
) -> None:
    serving = start_serving()
    eventually(lambda: serving.get("/v2/health/ready").status_code == 200)
    response = serving.post("/v2/models/churn/infer", json={"inputs": [tensor]})
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error"}
    assert says in response.json()["error"]


def test_infer_body_may_be_gzip_compressed(
    churn: FakeRegistry, triton_for: Callable[..., tuple[Any, ServingClient]]
) -> None:
    client, _ = triton_for()
    result = client.infer("churn", [matrix(X, "FP64")], request_compression_algorithm="gzip")
    assert result.as_numpy("predict") == pytest.approx(X.sum(axis=1) + 1)


def test_v2_routes_answer_through_httpx_too(churn: FakeRegistry, start_serving: Start) -> None:
    """Nested row-major data and the headers Berth adds, seen on the wire."""
    serving = start_serving()
    eventually(lambda: serving.get("/v2/health/ready").status_code == 200)
    body = {
        "inputs": [{"name": "input", "shape": [2, 3], "datatype": "FP64", "data": X[:2].tolist()}]
    }
    response = serving.post("/v2/models/churn/infer", json=body)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["X-Model-Version"] == "1"
    assert response.json() == {
        "model_name": "churn",
        "model_version": "1",
        "outputs": [
            {
                "name": "predict",
                "datatype": "FP64",
                "shape": [2],
                "data": pytest.approx((X[:2].sum(axis=1) + 1).tolist()),
            }
        ],
    }
