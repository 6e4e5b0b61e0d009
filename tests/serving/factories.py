"""Plain factory functions: small fitted estimators, their artifacts and their metadata."""

from __future__ import annotations

import hashlib
import io
from typing import Any

import joblib
import numpy as np
from sklearn.linear_model import LinearRegression, LogisticRegression

from registry.schemas import DType, Example, FeatureSpec, Signature, VersionMetadata

FEATURES = ("age", "income", "tenure")


def training_data(n_features: int = len(FEATURES), *, seed: int = 0) -> np.ndarray[Any, Any]:
    return np.random.default_rng(seed).normal(size=(64, n_features))


def regressor(*, offset: float = 0.0, n_features: int = len(FEATURES)) -> LinearRegression:
    """A linear model predicting sum(x) + offset: versions differ by a visible constant."""
    x = training_data(n_features)
    return LinearRegression().fit(x, x.sum(axis=1) + offset)


def classifier(*, n_features: int = len(FEATURES)) -> LogisticRegression:
    x = training_data(n_features)
    return LogisticRegression().fit(x, (x.sum(axis=1) > 0).astype(int))


def artifact(estimator: Any) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(estimator, buffer)
    return buffer.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def signature(
    names: tuple[str, ...] = FEATURES, dtypes: tuple[DType, ...] | None = None
) -> Signature:
    kinds = dtypes or tuple(DType.float64 for _ in names)
    return Signature(
        inputs=[FeatureSpec(name=n, dtype=d) for n, d in zip(names, kinds, strict=True)]
    )


def metadata(
    estimator: Any,
    *,
    names: tuple[str, ...] = FEATURES,
    methods: tuple[str, ...] = ("predict",),
    tamper: float = 0.0,
    with_signature: bool = True,
    with_example: bool = True,
) -> VersionMetadata:
    """Metadata as a client would push it; `tamper` shifts the recorded example outputs."""
    rows = training_data(len(names), seed=1)[:4]
    outputs = {m: np.asarray(getattr(estimator, m)(rows)) for m in methods}
    if tamper:  # only then: adding 0.0 would turn labels (bools, strings) into floats
        outputs = {m: values + tamper for m, values in outputs.items()}
    return VersionMetadata(
        flavor="sklearn",
        signature=signature(names) if with_signature else None,
        example=(
            Example(inputs=rows.tolist(), outputs={m: v.tolist() for m, v in outputs.items()})
            if with_example
            else None
        ),
    )


def row(n: int = len(FEATURES), value: float = 1.0) -> list[float]:
    return [value] * n
