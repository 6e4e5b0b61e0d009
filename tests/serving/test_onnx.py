"""The compiled path: an `onnx` rendition answers only once it reproduces the stored example."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

from berth.renditions import onnx_rendition
from serving.loader import LoadedModel, Loader, LoaderOptions
from tests.serving.conftest import ServingClient, eventually
from tests.serving.factories import FEATURES, artifact, metadata, training_data
from tests.serving.fakes import FakeRegistry, FakeSource


def forest(*, seed: int = 0) -> RandomForestRegressor:
    x = training_data(seed=seed)
    return RandomForestRegressor(n_estimators=10, max_depth=4, random_state=seed).fit(
        x, x.sum(axis=1) * 100 + seed
    )


def onnx_bytes(estimator: Any, tmp_path: Path) -> bytes:
    part = onnx_rendition(estimator, training_data()[:1], tmp_path)
    assert part is not None
    return part.path.read_bytes()


def push(
    registry: FakeRegistry, estimator: Any, onnx: bytes, *, methods: tuple[str, ...] = ("predict",)
) -> int:
    return registry.add_version(
        "churn", artifact(estimator), metadata(estimator, methods=methods), files={"onnx": onnx}
    )


def load(registry: FakeRegistry, version: int, **options: Any) -> LoadedModel:
    loader = Loader(FakeSource(registry), options=LoaderOptions(**options))
    return asyncio.run(loader.load("churn", version))


def test_a_rendition_that_reproduces_the_example_answers(tmp_path: Path) -> None:
    registry = FakeRegistry()
    estimator = forest()
    loaded = load(registry, push(registry, estimator, onnx_bytes(estimator, tmp_path)))

    assert (loaded.runtime, loaded.runtime_note) == ("onnx", None)
    rows = training_data(seed=7)
    got = loaded.methods["predict"](rows)
    assert got.shape == (len(rows),)
    # Inputs are float32 on both paths (trees compare float32 thresholds): same leaves.
    np.testing.assert_allclose(got, estimator.predict(rows), rtol=1e-4, atol=1e-3)
    assert loaded.inline  # microseconds per row: predicted on the loop


def test_a_classifier_answers_labels_and_probabilities(tmp_path: Path) -> None:
    registry = FakeRegistry()
    x = training_data()
    labels = np.where(x[:, 0] > 0, "churn", "stay")
    estimator = RandomForestClassifier(n_estimators=5, random_state=0).fit(x, labels)
    onnx = onnx_bytes(estimator, tmp_path)
    loaded = load(registry, push(registry, estimator, onnx, methods=("predict", "predict_proba")))

    assert loaded.runtime == "onnx"
    rows = training_data(seed=3)
    assert loaded.methods["predict"](rows).tolist() == estimator.predict(rows).tolist()
    np.testing.assert_allclose(
        loaded.methods["predict_proba"](rows), estimator.predict_proba(rows), atol=1e-6
    )


def test_labels_of_another_type_than_the_estimator_answers_keep_scikit_learn(
    tmp_path: Path,
) -> None:
    registry = FakeRegistry()
    x = training_data()
    # skl2onnx answers bool classes as 0/1: the JSON answer would change, so it is not used.
    estimator = RandomForestClassifier(n_estimators=5, random_state=0).fit(x, x[:, 0] > 0)
    loaded = load(registry, push(registry, estimator, onnx_bytes(estimator, tmp_path)))

    assert loaded.runtime == "sklearn"
    assert loaded.runtime_note is not None
    assert "bool" in loaded.runtime_note
    assert loaded.methods["predict"](x[:2]).dtype == np.bool_


def test_a_rendition_of_another_model_is_not_used_and_the_version_says_why(
    tmp_path: Path,
) -> None:
    registry = FakeRegistry()
    estimator = forest()
    loaded = load(registry, push(registry, estimator, onnx_bytes(forest(seed=1), tmp_path)))

    assert loaded.runtime == "sklearn"
    assert loaded.runtime_note is not None
    assert "does not reproduce" in loaded.runtime_note
    assert loaded.methods["predict"](training_data()[:2]).tolist() == (
        estimator.predict(training_data()[:2]).tolist()
    )


def test_switched_off_the_scikit_learn_model_answers(tmp_path: Path) -> None:
    registry = FakeRegistry()
    estimator = forest()
    loaded = load(registry, push(registry, estimator, onnx_bytes(estimator, tmp_path)), onnx=False)

    assert loaded.runtime == "sklearn"
    assert loaded.runtime_note is not None
    assert "BERTH_ONNX" in loaded.runtime_note


def test_a_rendition_whose_digest_differs_is_never_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = FakeRegistry()
    estimator = forest()
    version = push(registry, estimator, onnx_bytes(estimator, tmp_path))
    registry.corrupt("churn", version, "onnx")
    opened: list[Path] = []
    monkeypatch.setattr("serving.loader.load_onnx", opened.append)

    loaded = load(registry, version)

    assert opened == []
    assert loaded.runtime == "sklearn"
    assert loaded.runtime_note is not None
    assert "sha256" in loaded.runtime_note


def test_status_names_the_runtime_each_version_answers_with(
    tmp_path: Path, fake: FakeRegistry, start_serving: Any
) -> None:
    estimator = forest()
    push(fake, estimator, onnx_bytes(estimator, tmp_path))
    push(fake, estimator, onnx_bytes(forest(seed=1), tmp_path))
    fake.set_alias("churn", "production", 1)
    fake.set_alias("churn", "staging", 2)
    client: ServingClient = start_serving()
    eventually(lambda: client.get("/readyz").status_code == 200)

    row = training_data(seed=5)[:1].tolist()
    for path in ("/models/churn/predict", "/models/churn/aliases/staging/predict"):
        answer = client.post(path, json={"inputs": row})
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"] == [pytest.approx(estimator.predict(row)[0], rel=1e-4)]
    loaded = {m["version"]: m for m in client.get("/status").json()["loaded"]}
    assert (loaded[1]["runtime"], loaded[1]["runtime_note"]) == ("onnx", None)
    assert loaded[2]["runtime"] == "sklearn"
    assert "does not reproduce" in loaded[2]["runtime_note"]
    assert len(FEATURES) == len(row[0])
