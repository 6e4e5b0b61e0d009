from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from registry.schemas import VersionMetadata
from serving.errors import LoadFailed, VersionNotFound
from serving.loader import (
    LoadedModel,
    Loader,
    LoaderOptions,
    Predictor,
    load_model,
    outputs_match,
)
from tests.serving.factories import artifact, classifier, metadata, regressor, row
from tests.serving.fakes import FakeRegistry
from tests.serving.fakes import FakeSource as Source


def upload(registry: FakeRegistry, estimator: Any, meta: VersionMetadata | None = None) -> int:
    return registry.add_version("churn", artifact(estimator), meta or metadata(estimator))


def load(source: Source, version: int, **kwargs: Any) -> LoadedModel:
    return asyncio.run(Loader(source, options=LoaderOptions(), **kwargs).load("churn", version))


def test_a_good_version_loads_warms_and_decides_where_to_predict() -> None:
    registry = FakeRegistry()
    version = upload(registry, regressor(offset=5))
    loaded = load(Source(registry), version)
    assert (loaded.name, loaded.version) == ("churn", version)
    assert loaded.sha256 == registry.versions[("churn", version)].sha256
    assert loaded.schema is not None
    assert loaded.schema.names == ("age", "income", "tenure")
    assert loaded.methods["predict"](np.array([row()]))[0] == pytest.approx(8.0)
    assert loaded.inline  # a linear model predicts one row far below a millisecond
    assert 0 < loaded.predict_seconds < 0.001


def test_a_changed_artifact_fails_at_digest_and_is_never_deserialised() -> None:
    registry = FakeRegistry()
    version = upload(registry, regressor())
    registry.corrupt("churn", version)
    deserialised: list[Path] = []

    def spy(path: Path, flavor: str) -> Predictor:
        deserialised.append(path)
        return load_model(path, flavor)

    failures: list[LoadFailed] = []
    with pytest.raises(LoadFailed) as caught:
        load(Source(registry), version, load=spy, on_failure=failures.append)
    assert caught.value.stage == "digest"
    assert not caught.value.transient
    assert "registry recorded" in caught.value.message
    assert deserialised == []
    assert failures == [caught.value]


def test_an_example_that_does_not_reproduce_fails_at_example() -> None:
    registry = FakeRegistry()
    estimator = regressor()
    version = upload(registry, estimator, metadata(estimator, tamper=0.5))
    with pytest.raises(
        LoadFailed, match="does not reproduce: predict: 4 of 4 values differ"
    ) as caught:
        load(Source(registry), version)
    assert caught.value.stage == "example"


def test_an_example_the_signature_does_not_accept_fails_at_example() -> None:
    registry = FakeRegistry()
    estimator = regressor()
    good = metadata(estimator)
    assert good.example is not None
    bad = good.model_copy(
        update={"example": good.example.model_copy(update={"inputs": [["a", 1, 2]] * 4})}
    )
    version = upload(registry, estimator, bad)
    with pytest.raises(LoadFailed, match="does not fit the signature") as caught:
        load(Source(registry), version)
    assert caught.value.stage == "example"


def test_probabilities_in_the_example_are_checked_too() -> None:
    registry = FakeRegistry()
    estimator = classifier()
    version = upload(registry, estimator, metadata(estimator, methods=("predict", "predict_proba")))
    loaded = load(Source(registry), version)
    assert set(loaded.methods) >= {"predict", "predict_proba", "decision_function"}
    wrong = metadata(estimator, methods=("predict", "predict_proba"), tamper=0.01)
    with pytest.raises(LoadFailed, match="example"):
        load(Source(registry), upload(registry, estimator, wrong))


def test_an_unknown_flavor_fails_at_load() -> None:
    registry = FakeRegistry()
    estimator = regressor()
    version = upload(
        registry, estimator, metadata(estimator).model_copy(update={"flavor": "pytorch"})
    )
    with pytest.raises(LoadFailed, match="flavor 'pytorch' is not supported") as caught:
        load(Source(registry), version)
    assert caught.value.stage == "load"


def test_an_artifact_that_is_not_a_model_fails_at_load() -> None:
    registry = FakeRegistry()
    version = registry.add_version("churn", artifact({"not": "a model"}), metadata(regressor()))
    with pytest.raises(LoadFailed, match="has no predict") as caught:
        load(Source(registry), version)
    assert caught.value.stage == "load"


def test_an_outage_is_a_transient_download_failure_and_a_missing_version_is_not_found() -> None:
    registry = FakeRegistry()
    version = upload(registry, regressor())
    source = Source(registry)
    source.outage = True
    with pytest.raises(LoadFailed) as caught:
        load(source, version)
    assert caught.value.stage == "download"
    assert caught.value.transient
    with pytest.raises(VersionNotFound, match="model 'churn' has no version 9"):
        load(source, 9)


def test_without_example_or_signature_the_version_loads_and_predicts_in_a_thread() -> None:
    registry = FakeRegistry()
    estimator = regressor()
    version = upload(
        registry, estimator, metadata(estimator, with_signature=False, with_example=False)
    )
    loaded = load(Source(registry), version)
    assert loaded.schema is None
    assert not loaded.inline


def test_outputs_match_compares_numbers_within_tolerance_and_labels_exactly() -> None:
    assert outputs_match([1.0, 2.0], [1.0, 2.0 + 1e-9], rtol=1e-6, atol=0) is None
    assert outputs_match([1.0, 2.0], [1.0, 2.1], rtol=1e-6, atol=0) is not None
    assert outputs_match(["a", "b"], ["a", "b"], rtol=0, atol=0) is None
    assert outputs_match(["a", "b"], ["a", "c"], rtol=0, atol=0) is not None
    assert "shape" in (outputs_match([[1.0]], [1.0], rtol=0, atol=0) or "")
