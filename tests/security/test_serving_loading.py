"""Serving checks every artifact again before loading it, and loads it where harm is contained."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from registry.schemas import Example, VersionMetadata
from serving.errors import LoadFailed
from serving.isolation import IsolatedLoader, IsolatedLoadFailed, _bare_environment
from serving.loader import Loader, LoaderOptions
from serving.registry_client import RegistryClient
from tests.conftest import RunningRegistry, make_settings, run_registry
from tests.fixtures.factories import promote, signature_for, upload_ok
from tests.fixtures.waiting import eventually
from tests.security.conftest import RunningServing
from tests.security.corpus import honest_zoo, hostile_corpus
from tests.serving.fakes import FakeRegistry


@pytest.fixture(scope="module")
def isolated() -> Iterator[IsolatedLoader]:
    loader = IsolatedLoader(memory_bytes=1024 * 1024 * 1024, cpu_seconds=2, wall_seconds=60)
    yield loader
    loader.close()


def _stack_global(module: str, name: str) -> bytes:
    return (
        b"".join(b"\x8c" + bytes([len(text)]) + text.encode() for text in (module, name)) + b"\x93"
    )


def memory_bomb() -> bytes:
    """Nothing but numpy's own array reconstructor, asked for 32 GiB: it passes the scan."""
    return (
        b"\x80\x04"
        + _stack_global("numpy._core.multiarray", "_reconstruct")
        + _stack_global("numpy", "ndarray")
        + b"\x8a\x05\x00\x00\x00\x00\x08\x85"  # shape (2**35,)
        + b"C\x01b\x87R."
    )


def cpu_hang() -> bytes:
    """Allowed calls only (numpy.sum of a 64 MiB array), a hundred thousand times."""
    head = (
        b"\x80\x04"
        + _stack_global("numpy._core.multiarray", "_reconstruct")
        + b"\x94"
        + _stack_global("numpy", "ndarray")
        + b"\x94J\x00\x00\x00\x04\x85C\x01b\x87R\x94"  # memo 2: the array
        + _stack_global("numpy", "sum")
        + b"\x94"  # memo 3: numpy.sum
    )
    return head + b"(" + b"h\x03h\x02\x85R" * 100_000 + b"l."


def _load_through_serving(
    data: bytes, flavor: str, tmp_path: Path, isolated: IsolatedLoader
) -> LoadFailed:
    """Hand `data` to serving's Loader as if the registry held it (a pre-scanner artifact, a
    registry with the check switched off): serving must refuse it on its own."""
    fake = FakeRegistry()
    fake.add_version("victim", data, VersionMetadata(flavor=flavor))

    async def load() -> LoadFailed:
        client = RegistryClient(
            "http://registry.test/api/v1",
            token=None,
            timeout_seconds=10,
            transport=httpx.ASGITransport(fake.app),
        )
        loader = Loader(client, options=LoaderOptions(download_dir=tmp_path), load=isolated)
        try:
            with pytest.raises(LoadFailed) as failed:
                await loader.load("victim", 1)
        finally:
            await client.aclose()
        return failed.value

    return asyncio.run(load())


def test_every_hostile_artifact_is_refused_at_load_and_runs_nothing(
    tmp_path: Path, isolated: IsolatedLoader
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    wrong = []
    for case in hostile_corpus(markers):
        failure = _load_through_serving(case.data, case.flavor, tmp_path, isolated)
        named = case.global_name is None or case.global_name in failure.reason
        if failure.stage != "inspect" or not named:
            wrong.append((case.name, failure.stage, failure.reason))
    assert wrong == []
    assert list(markers.iterdir()) == []


def test_a_model_that_eats_memory_on_load_is_killed_in_its_child(
    tmp_path: Path, isolated: IsolatedLoader
) -> None:
    path = tmp_path / "bomb.joblib"
    path.write_bytes(memory_bomb())
    with pytest.raises(IsolatedLoadFailed, match="memory limit"):
        isolated(path, "sklearn")


def test_a_model_that_spins_on_load_is_killed_in_its_child(
    tmp_path: Path, isolated: IsolatedLoader
) -> None:
    path = tmp_path / "hang.joblib"
    path.write_bytes(cpu_hang())
    with pytest.raises(IsolatedLoadFailed, match="CPU limit"):
        isolated(path, "sklearn")
    # The zygote outlives its children: the next load is served.
    honest = tmp_path / "honest.joblib"
    honest.write_bytes(honest_zoo()[0].data)
    assert "predict" in isolated(honest, "sklearn").methods


def test_the_loading_child_gets_no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BERTH_REGISTRY_TOKEN", "berth_secret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    environment = _bare_environment()
    assert set(environment) <= {
        "PATH",
        "LC_ALL",
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
    }
    assert "secret" not in repr(environment)


# --- the honest zoo, uploaded, promoted and served --------------------------------------------


@pytest.fixture
def open_registry(sqlite_url: str, tmp_path: Path) -> Any:
    from tests.conftest import Backend

    backend = Backend("sqlite+file", sqlite_url, (tmp_path / "artifacts").as_uri())
    yield from run_registry(make_settings(backend, tmp_path))


def test_the_honest_zoo_is_served_correctly_with_isolated_loading(
    open_registry: RunningRegistry,
    start_serving: Callable[..., RunningServing],
    tmp_path: Path,
) -> None:
    zoo = honest_zoo()
    for case in zoo:
        method = "predict"
        example = Example(
            inputs=case.inputs[:3].tolist(),
            outputs={method: np.asarray(case.model.predict(case.inputs[:3])).tolist()},
        )
        metadata = VersionMetadata(signature=signature_for(4), example=example)
        upload_ok(open_registry.api, case.name, case.data, metadata=metadata.model_dump())
        assert promote(open_registry.api, case.name, 1).status_code == 200
    serving = start_serving(
        open_registry,
        auth=False,
        load_isolation=True,
        load_memory_bytes=2048 * 1024 * 1024,
        load_cpu_seconds=60,
        download_dir=tmp_path,
    )
    with serving.client() as client:

        def all_loaded() -> bool:
            # Served, not only loaded: a version is in memory a moment before its alias swaps.
            status = client.get("/status").json()
            loaded = {m["model"] for m in status["loaded"]}
            routed = {a["model"] for a in status["aliases"] if a["revision"] is not None}
            return loaded == routed == {case.name for case in zoo}

        eventually(all_loaded, within=120)
        for case in zoo:
            rows = case.inputs[10:20]
            answer = client.post(f"/models/{case.name}/predict", json={"inputs": rows.tolist()})
            assert answer.status_code == 200, answer.text
            expected = case.model.predict(rows)
            np.testing.assert_allclose(answer.json()["predictions"], expected)
