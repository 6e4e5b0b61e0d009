"""The registry refuses unsafe artifacts at upload, leaves nothing behind, and runs nothing."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import httpx
import joblib
import numpy as np
import pytest

from tests.conftest import RunningRegistry
from tests.fixtures.factories import upload, upload_ok
from tests.registry.test_models_api import assert_error
from tests.registry.test_versions_api import version_rows
from tests.security.corpus import Hostile, _Reduce, honest_zoo, hostile_corpus


def test_every_hostile_artifact_is_refused_at_upload(
    registry: RunningRegistry, tmp_path: Path
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    corpus = hostile_corpus(markers)
    wrong: list[tuple[str, int, str]] = []
    for case in corpus:
        response = upload(registry.api, "victim", case.data, metadata={"flavor": case.flavor})
        body = response.json()
        detail = body.get("detail") or {}
        if (
            response.status_code != 422
            or body.get("error") != "unsafe_artifact"
            or detail.get("file") != "artifact"
            or (case.global_name is not None and detail.get("global") != case.global_name)
        ):
            wrong.append((case.name, response.status_code, response.text[:300]))
    assert wrong == []
    assert version_rows(registry) == 0
    assert list(registry.store.list_pending()) == []
    assert list(registry.store.list_blobs()) == []
    assert list(markers.iterdir()) == []
    assert len(corpus) >= 40


def test_the_refusal_names_the_global(api: httpx.Client, tmp_path: Path) -> None:
    case = _case(tmp_path, "os.system via __reduce__ (joblib)")
    body = assert_error(upload(api, "victim", case.data), 422, "unsafe_artifact")
    assert "posix.system" in str(body["message"])
    assert body["detail"] == {
        "file": "artifact",
        "flavor": "sklearn",
        "reason": "disallowed_global",
        "global": "posix.system",
        "offset": body["detail"]["offset"],  # type: ignore[index]
    }


def test_every_honest_model_is_accepted(api: httpx.Client) -> None:
    for case in honest_zoo():
        version = upload_ok(api, case.name, case.data)
        assert version["flavor"] == "sklearn"
        artifact = api.get(f"/models/{case.name}/versions/1/artifact", follow_redirects=True)
        assert artifact.content == case.data


def test_a_hostile_rendition_is_refused_too(registry: RunningRegistry, tmp_path: Path) -> None:
    honest = honest_zoo()[0].data
    hostile = _case(tmp_path, "protocol 2").data
    response = upload(registry.api, "churn", honest, extra_files={"legacy": hostile})
    body = assert_error(response, 422, "unsafe_artifact")
    assert body["detail"]["file"] == "legacy"  # type: ignore[index]
    assert version_rows(registry) == 0
    assert list(registry.store.list_pending()) == []


def test_renditions_that_are_not_pickles_pass(api: httpx.Client) -> None:
    honest = honest_zoo()[0].data
    version = upload_ok(api, "churn", honest, extra_files={"onnx": b"\x08\x07" + os.urandom(500)})
    assert {f["name"] for f in version["files"]} == {"artifact", "onnx"}


def test_unknown_flavors_take_data_but_not_pickles(api: httpx.Client) -> None:
    # Random bytes from a first byte no pickle opcode uses: bare os.urandom starts with the FRAME
    # opcode now and then, and a stream that parses as a pickle is refused as one (rightly).
    upload_ok(api, "weights", b"\x00" + os.urandom(4095), metadata={"flavor": "custom"})
    hidden = pickle.dumps(_Reduce(os.system, ("true",)), protocol=2)
    body = assert_error(
        upload(api, "weights", hidden, metadata={"flavor": "custom"}), 422, "unsafe_artifact"
    )
    assert body["detail"]["global"] == "posix.system"  # type: ignore[index]


def test_an_sklearn_artifact_must_be_a_pickle(api: httpx.Client) -> None:
    body = assert_error(upload(api, "churn", b"\x08" + os.urandom(4096)), 422, "unsafe_artifact")
    assert body["detail"]["reason"] == "malformed"  # type: ignore[index]


def test_a_skops_upload_without_a_flavor_is_recognised(api: httpx.Client) -> None:
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    x = np.random.default_rng(0).normal(size=(40, 3))
    model = LogisticRegression().fit(x, (x[:, 0] > 0).astype(int))
    buffer = io.BytesIO()
    sio.dump(model, buffer)
    assert upload_ok(api, "skopsy", buffer.getvalue())["flavor"] == "skops"
    body = assert_error(
        upload(api, "skopsy", buffer.getvalue(), metadata={"flavor": "sklearn"}),
        422,
        "unsafe_artifact",
    )
    assert body["detail"]["reason"] == "wrong_format"  # type: ignore[index]


def _case(tmp_path: Path, name: str) -> Hostile:
    return next(c for c in hostile_corpus(tmp_path) if c.name == name)


@pytest.mark.parametrize("size_mib", [24])
def test_a_large_honest_artifact_streams_through_the_scan(
    registry: RunningRegistry, size_mib: int
) -> None:
    weights = np.random.default_rng(0).normal(size=size_mib * 1024 * 1024 // 8)
    buffer = io.BytesIO()
    joblib.dump({"coef_": weights, "intercept_": 0.5}, buffer)
    data = buffer.getvalue()
    version = upload_ok(registry.api, "big", data)
    assert version["size"] == len(data)
