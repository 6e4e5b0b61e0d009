"""The ONNX rendition `push` adds by default, and skips for a model that does not convert."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import LogisticRegression

from berth.packaging import RENDITIONS, package
from berth.renditions import onnx_rendition


def test_push_renders_onnx_by_default_and_it_predicts_like_the_estimator(tmp_path: Path) -> None:
    x = np.random.default_rng(0).normal(size=(80, 4))
    model = RandomForestRegressor(n_estimators=5, max_depth=4, random_state=0).fit(x, x.sum(1))
    assert onnx_rendition in RENDITIONS

    pkg = package(model, tmp_path, sample=x[:3])

    assert [f.name for f in pkg.files] == ["artifact", "onnx"]
    session = onnxruntime.InferenceSession(str(pkg.files[1].path))
    (got,) = session.run(None, {session.get_inputs()[0].name: x.astype(np.float32)})
    np.testing.assert_allclose(got.ravel(), model.predict(x), rtol=1e-4, atol=1e-5)


def test_classifiers_render_probabilities_as_a_plain_array(tmp_path: Path) -> None:
    x = np.random.default_rng(1).normal(size=(60, 3))
    model = LogisticRegression().fit(x, x[:, 0] > 0)
    part = onnx_rendition(model, x[:1], tmp_path)
    assert part is not None
    session = onnxruntime.InferenceSession(str(part.path))
    assert [o.name for o in session.get_outputs()] == ["label", "probabilities"]


class Opaque:
    """Predicts, but is nothing skl2onnx knows how to convert."""

    n_features_in_ = 2

    def predict(self, rows: Any) -> Any:
        return np.asarray(rows).sum(axis=1)


def test_a_model_that_does_not_convert_is_pushed_without_a_rendition(tmp_path: Path) -> None:
    assert onnx_rendition(Opaque(), np.ones((1, 2)), tmp_path) is None
    assert onnx_rendition(Opaque(), None, tmp_path) is None
