"""The serving app end to end in one process, against the in-memory fake registry."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from serving.main import Runtime, create_app
from tests.fixtures.servers import LiveServer
from tests.serving.conftest import ServingClient, eventually, serving_settings
from tests.serving.factories import artifact, classifier, metadata, regressor, row
from tests.serving.fakes import STORE_HOST, FakeRegistry

Start = Callable[..., ServingClient]


def push(fake: FakeRegistry, estimator: Any, name: str = "churn", **meta: Any) -> int:
    return fake.add_version(name, artifact(estimator), metadata(estimator, **meta))


def runtime(client: ServingClient) -> Runtime:
    return client.runtime


def answered_by(client: ServingClient, path: str = "/models/churn/predict", **kwargs: Any) -> int:
    response = client.post(path, json={"inputs": [row()]}, **kwargs)
    assert response.status_code == 200, response.text
    version: int = response.json()["version"]
    return version


def serves(client: ServingClient, version: int, path: str = "/models/churn/predict") -> bool:
    return answered_by(client, path) == version


def ready(client: ServingClient) -> bool:
    return client.get("/readyz").status_code == 200


def test_predict_by_default_alias_named_alias_and_pinned_version(
    two_versions: FakeRegistry, start_serving: Start
) -> None:
    two_versions.set_alias("churn", "staging", 2)
    client = start_serving()
    eventually(lambda: ready(client))

    response = client.post("/models/churn/predict", json={"inputs": [row(), row(value=2)]})
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == "churn"
    assert body["version"] == 1
    assert body["alias"] == "production"
    assert body["predictions"] == pytest.approx([4.0, 7.0])
    assert response.headers["X-Model-Version"] == "1"
    assert response.headers["X-Model-Sha256"] == two_versions.versions[("churn", 1)].sha256
    assert response.headers["content-type"] == "application/json"

    staging = client.post("/models/churn/aliases/staging/predict", json={"input": row()})
    assert staging.json() == {
        "model": "churn",
        "version": 2,
        "alias": "staging",
        "predictions": [pytest.approx(5.0)],
    }

    pinned = client.post("/models/churn/versions/2/predict", json={"input": row()}).json()
    assert pinned == {"model": "churn", "version": 2, "predictions": [pytest.approx(5.0)]}


def test_probabilities_come_under_their_method_name(
    fake: FakeRegistry, start_serving: Start
) -> None:
    estimator = classifier()
    push(fake, estimator, methods=("predict", "predict_proba"))
    fake.set_alias("churn", "production", 1)
    client = start_serving()
    eventually(lambda: ready(client))
    body = client.post(
        "/models/churn/predict",
        json={"inputs": [row(value=3), row(value=-3)], "outputs": ["predict", "predict_proba"]},
    ).json()
    assert body["predictions"] == [1, 0]
    assert len(body["predict_proba"]) == 2
    assert body["predict_proba"][0][1] > 0.5 > body["predict_proba"][1][1]
    only = client.post(
        "/models/churn/predict", json={"input": row(), "outputs": ["predict_proba"]}
    ).json()
    assert "predictions" not in only
    assert sum(only["predict_proba"][0]) == pytest.approx(1.0)


def test_unknown_model_version_and_alias_are_404_naming_them(
    two_versions: FakeRegistry, start_serving: Start
) -> None:
    client = start_serving()
    eventually(lambda: ready(client))
    cases = {
        "/models/nope/predict": (
            "model_not_found",
            "model 'nope' does not exist or has no aliases",
        ),
        "/models/churn/aliases/canary/predict": (
            "alias_not_found",
            "model 'churn' has no alias 'canary'",
        ),
        "/models/churn/versions/9/predict": ("version_not_found", "model 'churn' has no version 9"),
        "/models/nope/versions/1/predict": ("model_not_found", "model 'nope' does not exist"),
        "/models/NOPE/versions/1/predict": ("model_not_found", "model 'NOPE' does not exist"),
    }
    for path, (code, message) in cases.items():
        response = client.post(path, json={"input": row()})
        assert response.status_code == 404, path
        assert response.json() == {
            "error": code,
            "message": message,
            "detail": response.json()["detail"],
        }
    # Names that match nothing never become metric labels (one new series per request).
    metrics = client.get("/metrics").text
    assert 'model_name="nope"' not in metrics
    assert 'model_name="NOPE"' not in metrics
    assert 'alias="canary"' not in metrics
    assert (
        'berth_serving_request_errors_total{alias="",error="alias_not_found",model_name="",'
        'model_version=""} 1.0'
    ) in metrics
    assert (
        'berth_serving_request_errors_total{alias="",error="model_not_found",model_name="",'
        'model_version=""} 3.0'
    ) in metrics
    # A path that is not a route at all answers in the same shape.
    missing = client.get("/nothing/here")
    assert missing.status_code == 404
    assert missing.json()["error"] == "not_found"
    wrong_method = client.get("/models/churn/predict")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"] == "method_not_allowed"


def message(response: httpx.Response) -> str:
    """The message of any protocol's error body: Berth's and MLflow's, or the OIP's and KServe's."""
    body = response.json()
    text: str = body.get("message") or body["error"]
    return text


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/models/{}/predict"),
        ("POST", "/v2/models/{}/infer"),
        ("GET", "/v2/models/{}"),
        ("GET", "/v2/models/{}/ready"),
        ("POST", "/v1/models/{}:predict"),
        ("GET", "/v1/models/{}"),
        ("POST", "/models/{}/invocations"),
    ],
)
def test_every_protocol_names_an_unknown_model_and_a_missing_alias_of_a_known_one(
    fake: FakeRegistry, start_serving: Start, method: str, path: str
) -> None:
    push(fake, regressor())
    fake.set_alias("churn", "staging", 1)  # churn is known, but has no default alias
    client = start_serving()
    eventually(lambda: ready(client))
    eventually(lambda: ("churn", "staging") in runtime(client).router.table)
    body = {"inputs": [row()]} if method == "POST" else None
    unknown = client.request(method, path.format("nope"), json=body)
    assert unknown.status_code == 404
    assert message(unknown) == "model 'nope' does not exist or has no aliases"
    no_alias = client.request(method, path.format("churn"), json=body)
    assert no_alias.status_code == 404
    assert message(no_alias) == "model 'churn' has no alias 'production'"


@pytest.mark.parametrize(
    ("body", "status", "code", "fragment"),
    [
        (b'{"inputs": [[1, 2', 400, "malformed_body", "not valid JSON"),
        (b"\xff\xfe", 400, "malformed_body", "not valid JSON"),
        (b"[" * 100_000, 400, "malformed_body", "not valid JSON"),
        (b'{"inputs": [[1, 2]]}', 422, "feature_count_mismatch", "row 0 has 2 values, expected 3"),
        (b'{"inputs": [[1, "x", 2]]}', 422, "feature_type_mismatch", "feature 'income'"),
        (b'{"dataframe_records": [{"age": 1}]}', 422, "missing_features", "'income', 'tenure'"),
        (
            b'{"input": [1, 2, 3], "outputs": ["predict_proba"]}',
            422,
            "unsupported_output",
            "has no predict_proba",
        ),
        (
            b'{"input": [1, 2, 3], "outputs": ["fit"]}',
            422,
            "unsupported_output",
            "unknown outputs 'fit'",
        ),
        (b'{"input": [null, 2, 3]}', 422, "prediction_rejected", "rejected the input"),
        (b'{"input": [1e999, 2, 3]}', 422, "prediction_rejected", "rejected the input"),
        (b'"just a string"', 422, "invalid_input", "must be a JSON object"),
    ],
)
def test_bad_input_is_refused_with_the_error_body_and_never_a_500(
    two_versions: FakeRegistry,
    start_serving: Start,
    body: bytes,
    status: int,
    code: str,
    fragment: str,
) -> None:
    client = start_serving()
    eventually(lambda: ready(client))
    for path in ("/models/churn/predict", "/models/churn/versions/2/predict"):
        response = client.post(path, content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == status, response.text
        assert response.json()["error"] == code
        assert fragment in response.json()["message"]
        assert set(response.json()) == {"error", "message", "detail"}


def test_a_body_over_the_limit_is_refused_before_it_is_read(
    two_versions: FakeRegistry, start_serving: Start
) -> None:
    client = start_serving(max_predict_bytes=2048)
    eventually(lambda: ready(client))
    response = client.post("/models/churn/predict", json={"inputs": [row()] * 200})
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"

    def chunks() -> Any:
        yield b'{"inputs": ['
        for _ in range(400):
            yield b"[1, 2, 3],"
        yield b"[1, 2, 3]]}"

    streamed = client.post("/models/churn/predict", content=chunks())
    assert streamed.status_code == 413


def test_a_promotion_swaps_in_after_loading_and_rollback_is_instant(
    two_versions: FakeRegistry, start_serving: Start
) -> None:
    client = start_serving()
    eventually(lambda: ready(client))
    assert serves(client, 1)
    two_versions.set_alias("churn", "production", 2)
    eventually(lambda: serves(client, 2))
    two_versions.set_alias("churn", "production", 1)
    eventually(lambda: serves(client, 1))
    # v1 was still in memory: the rollback needed no second download.
    assert two_versions.downloads[("churn", 1)] == 1
    assert eventually(lambda: two_versions.served_revision("replica-a", "churn", "production") == 3)


@pytest.mark.parametrize("defect", ["corrupted", "example"])
def test_a_version_that_fails_to_load_never_takes_traffic(
    two_versions: FakeRegistry, start_serving: Start, defect: str
) -> None:
    if defect == "corrupted":
        bad = push(two_versions, regressor(offset=3))
        two_versions.corrupt("churn", bad)
        stage = "digest"
    else:
        estimator = regressor(offset=3)
        bad = push(two_versions, estimator, tamper=0.5)
        stage = "example"
    client = start_serving()
    eventually(lambda: ready(client))
    two_versions.set_alias("churn", "production", bad)
    # The failure is recorded before the alias says why it is pending: wait for both.
    status = eventually(
        lambda: (
            (s := client.get("/status").json())["failures"]
            and s["aliases"][0]["pending_reason"]
            and s
        ),
    )
    assert [(f["version"], f["stage"]) for f in status["failures"]] == [(bad, stage)]
    alias = status["aliases"][0]
    assert (alias["revision"], alias["pending_revision"]) == (1, 2)
    assert f"[{bad}] that failed to load" in alias["pending_reason"]
    assert all(answered_by(client) == 1 for _ in range(20))
    metrics = client.get("/metrics").text
    assert (
        f'berth_serving_model_load_failures_total{{model_name="churn",model_version="{bad}",'
        f'stage="{stage}"}} 1.0'
    ) in metrics
    assert "berth_serving_pending_aliases 1.0" in metrics
    report = eventually(lambda: two_versions.reports.get("replica-a"))
    eventually(lambda: two_versions.reports["replica-a"].failures)
    assert two_versions.served_revision("replica-a", "churn", "production") == 1
    assert report.position >= 1
    # Pinned, the same version answers 503 with the reason, never 200 and never a 500.
    pinned = client.post(f"/models/churn/versions/{bad}/predict", json={"input": row()})
    assert pinned.status_code == 503
    assert pinned.json()["error"] == "load_failed"
    assert stage in pinned.json()["message"]


def test_pinned_requests_for_a_broken_or_missing_version_do_not_load_it_each_time(
    two_versions: FakeRegistry, start_serving: Start
) -> None:
    bad = push(two_versions, regressor(offset=3))
    two_versions.corrupt("churn", bad)
    client = start_serving()
    eventually(lambda: ready(client))
    for version, status in ((bad, 503), (9, 404)):
        answers = [
            client.post(f"/models/churn/versions/{version}/predict", json={"input": row()})
            for _ in range(10)
        ]
        assert {a.status_code for a in answers} == {status}
        assert all(a.json() == answers[0].json() for a in answers)
        asked = [
            s for s in two_versions.seen if s.path == f"/api/v1/models/churn/versions/{version}"
        ]
        assert len(asked) == 1, version
    assert two_versions.downloads[("churn", bad)] == 1
    failures = client.get("/status").json()["failures"]
    assert [(f["version"], f["stage"]) for f in failures] == [(bad, "digest")]


def test_sticky_ab_split_by_routing_key(two_versions: FakeRegistry, start_serving: Start) -> None:
    two_versions.set_alias("churn", "production", variants=[(1, 50), (2, 50)])
    client = start_serving()
    eventually(lambda: ready(client))
    eventually(lambda: runtime(client).follower.live[("churn", "production")].revision == 2)
    seen: dict[str, int] = {}
    for i in range(60):
        key = f"user-{i}"
        first = answered_by(client, headers={"X-Routing-Key": key})
        assert answered_by(client, headers={"X-Routing-Key": key}) == first
        seen[key] = first
    assert set(seen.values()) == {1, 2}


def test_shadow_versions_get_copies_and_their_agreement_is_recorded(
    fake: FakeRegistry, start_serving: Start
) -> None:
    push(fake, regressor(offset=1))
    push(fake, regressor(offset=1))  # agrees with v1
    push(fake, regressor(offset=9))  # disagrees
    fake.set_alias("churn", "production", 1, shadow=(2, 3))
    client = start_serving()
    eventually(lambda: ready(client))
    for _ in range(10):
        assert answered_by(client) == 1

    def shadow_stats() -> dict[int, dict[str, Any]] | None:
        stats = {s["version"]: s for s in client.get("/status").json()["shadow"]}
        # `requests` counts a shadow call when it starts; `rows` once its answer is compared
        # and its metrics written, which is what the assertions below read.
        done = stats and all(s["requests"] == s["rows"] == 10 for s in stats.values())
        return stats if done else None

    stats = eventually(shadow_stats)
    assert stats[2]["agreement"] == 1.0
    assert stats[3]["agreement"] == 0.0
    assert stats[2]["errors"] == 0
    metrics = client.get("/metrics").text
    assert (
        'berth_serving_shadow_rows_total{agreement="disagree",alias="production",'
        'model_name="churn",model_version="3"} 10.0'
    ) in metrics


def test_readiness_waits_for_the_default_aliases_and_health_does_not(
    two_versions: FakeRegistry, start_serving: Start
) -> None:
    two_versions.down = True
    client = start_serving()
    assert client.get("/healthz").json() == {"status": "ok"}
    not_ready = client.get("/readyz")
    assert not_ready.status_code == 503
    assert not_ready.json()["error"] == "not_ready"
    two_versions.down = False
    eventually(lambda: ready(client))
    assert serves(client, 1)


def test_the_registry_going_down_does_not_stop_answers(
    two_versions: FakeRegistry, start_serving: Start
) -> None:
    client = start_serving()
    eventually(lambda: ready(client))
    two_versions.down = True
    eventually(lambda: not client.get("/status").json()["feed"]["connected"])
    assert all(serves(client, 1) for _ in range(20))
    assert client.get("/status").json()["feed"]["lag_seconds"] > 0
    # A version never loaded cannot be fetched now: 503, naming the registry.
    pinned = client.post("/models/churn/versions/2/predict", json={"input": row()})
    assert pinned.status_code == 503
    assert "database_unavailable" in pinned.json()["message"]
    two_versions.down = False
    two_versions.set_alias("churn", "production", 2)
    eventually(lambda: serves(client, 2))


def test_concurrent_first_requests_for_a_pinned_version_download_it_once(
    two_versions: FakeRegistry, start_serving: Start
) -> None:
    client = start_serving()
    eventually(lambda: ready(client))
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        versions = list(
            pool.map(lambda _: answered_by(client, "/models/churn/versions/2/predict"), range(16))
        )
    assert versions == [2] * 16
    assert two_versions.downloads[("churn", 2)] == 1


def test_the_token_goes_to_the_registry_and_never_to_the_store(
    two_versions: FakeRegistry, start_serving: Start
) -> None:
    two_versions.redirect_artifacts = True
    client = start_serving(registry_token="s3cret")
    eventually(lambda: ready(client))
    assert serves(client, 1)
    store = [r for r in two_versions.seen if r.host == STORE_HOST]
    registry = [r for r in two_versions.seen if r.host != STORE_HOST]
    assert store, "the artifact was not fetched through the redirect"
    assert all(r.authorization is None for r in store)
    assert registry
    assert all(r.authorization == "Bearer s3cret" for r in registry)


def test_status_and_metrics_describe_what_is_served(
    two_versions: FakeRegistry, start_serving: Start
) -> None:
    client = start_serving()
    eventually(lambda: ready(client))
    answered_by(client)
    answered_by(client, "/models/churn/versions/2/predict")
    status = client.get("/status").json()
    assert status["replica_id"] == "replica-a"
    assert status["feed"]["position"] == 1
    assert status["feed"]["connected"] is True
    assert status["aliases"] == [
        {
            "model": "churn",
            "alias": "production",
            "revision": 1,
            "variants": [{"version": 1, "weight": 100}],
            "shadow": [],
            "pending_revision": None,
            "pending_reason": None,
        }
    ]
    loaded = {(m["version"], m["behind_alias"]) for m in status["loaded"]}
    assert loaded == {(1, True), (2, False)}
    metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert (
        'berth_serving_requests_total{alias="production",model_name="churn",model_version="1"} 1.0'
        in text
    )
    assert 'berth_serving_requests_total{alias="",model_name="churn",model_version="2"} 1.0' in text
    assert 'berth_serving_request_duration_seconds_bucket{alias="production"' in text
    assert 'berth_serving_swaps_total{alias="production",model_name="churn"} 1.0' in text
    assert "berth_serving_feed_lag_seconds 0.0" in text
    assert "berth_serving_loaded_models 2.0" in text


def test_a_stopping_replica_deregisters(two_versions: FakeRegistry) -> None:
    app = create_app(serving_settings(), transport=httpx.ASGITransport(two_versions.app))
    replica_id = app.state.runtime.settings.replica_id
    with LiveServer(app):
        eventually(lambda: replica_id in two_versions.reports)
        assert two_versions.deregistered == []
    assert two_versions.deregistered == [replica_id]
