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
    predictor_of,
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


# --- scikit-learn's finiteness check, taken over -------------------------------------------


@pytest.fixture
def sklearn_finite_checks(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Each call of scikit-learn's own NaN/infinity check, as whether it did the work: False
    when told to assume finite input (it returns at once then)."""
    import sklearn
    from sklearn.utils import validation

    calls: list[bool] = []
    original = validation._assert_all_finite

    def recording(*args: Any, **kwargs: Any) -> Any:
        calls.append(not sklearn.get_config()["assume_finite"])
        return original(*args, **kwargs)

    monkeypatch.setattr(validation, "_assert_all_finite", recording)
    return calls


def test_a_single_estimator_predicts_the_same_without_sklearns_finiteness_check(
    sklearn_finite_checks: list[bool],
) -> None:
    estimator = regressor(offset=1)
    inputs = np.array([row(), row(value=2.5)])
    expected = estimator.predict(inputs)
    assert any(sklearn_finite_checks), "scikit-learn checks finiteness on its own"
    sklearn_finite_checks.clear()

    answer = predictor_of(estimator).methods["predict"](inputs)

    np.testing.assert_array_equal(answer, expected)
    assert not any(sklearn_finite_checks)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_is_still_refused_where_the_model_refuses_it(bad: float) -> None:
    inputs = np.array([row(), [1.0, bad, 3.0]])
    with pytest.raises(ValueError, match="NaN|infinity"):
        predictor_of(regressor()).methods["predict"](inputs)


def test_a_model_that_takes_missing_values_still_gets_them() -> None:
    from sklearn.ensemble import HistGradientBoostingRegressor

    x = np.random.default_rng(0).normal(size=(200, 3))
    x[::7, 1] = np.nan
    estimator = HistGradientBoostingRegressor(max_iter=5).fit(x, np.nan_to_num(x).sum(axis=1))
    inputs = np.array([[0.5, np.nan, 1.0]])
    np.testing.assert_array_equal(
        predictor_of(estimator).methods["predict"](inputs), estimator.predict(inputs)
    )


def test_pipelines_keep_sklearns_own_checks(sklearn_finite_checks: list[bool]) -> None:
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.random.default_rng(0).normal(size=(50, 3))
    pipeline = make_pipeline(StandardScaler(), LinearRegression()).fit(x, x.sum(axis=1))
    predictor_of(pipeline).methods["predict"](x[:2])
    assert all(sklearn_finite_checks), "a composite checks between its steps: left alone"
    assert sklearn_finite_checks
