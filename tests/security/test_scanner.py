"""The safety library on its own: hostile artifacts refused, honest ones accepted and loaded."""

from __future__ import annotations

import importlib
import io
import os
import pickle
import subprocess
import sys
import textwrap
import warnings
import zlib
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest

from safety import (
    BackgroundInspection,
    Kind,
    Reason,
    UnsafeArtifact,
    check,
    inspect_file,
    inspect_stream,
)
from safety.allowlist import ALLOWED
from safety.loading import load_artifact
from safety.pickles import Limits
from safety.streams import IterChunks
from tests.security.corpus import ZOO_NAMES, Honest, Hostile, honest_zoo, hostile_corpus

CORPUS_NAMES = [case.name for case in hostile_corpus(Path("/nonexistent"))]


@pytest.fixture(scope="module")
def markers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("markers")


@pytest.fixture(scope="module")
def corpus(markers: Path) -> dict[str, Hostile]:
    return {case.name: case for case in hostile_corpus(markers)}


@pytest.fixture(scope="module")
def zoo() -> dict[str, Honest]:
    return {case.name: case for case in honest_zoo()}


def chunks_of(data: bytes, size: int) -> IterChunks:
    return IterChunks(iter([data[i : i + size] for i in range(0, len(data), size)]))


def test_the_corpora_are_as_large_as_issue_5_asks() -> None:
    corpus = hostile_corpus(Path("/nonexistent"))
    assert len(corpus) >= 40
    assert sum(case.live for case in corpus) >= 20
    assert len({case.name for case in corpus}) == len(corpus)
    assert len(ZOO_NAMES) >= 8


def test_the_hostile_corpus_is_live(corpus: dict[str, Hostile], tmp_path: Path) -> None:
    """Positive control: plain `joblib.load` really runs every live payload (in a child)."""
    live = [case for case in corpus.values() if case.live]
    live_markers = tmp_path / "live"
    live_markers.mkdir()
    rebuilt = {case.name: case for case in hostile_corpus(live_markers)}
    paths = []
    for index, case in enumerate(live):
        path = tmp_path / f"{index}.joblib"
        path.write_bytes(rebuilt[case.name].data)
        paths.append(str(path))
    script = textwrap.dedent(
        """
        import sys, joblib
        for path in sys.argv[1:]:
            try:
                joblib.load(path)
            except Exception:
                pass
        """
    )
    subprocess.run([sys.executable, "-c", script, *paths], check=True, timeout=120)
    assert len(list(live_markers.iterdir())) == len(live)


@pytest.mark.parametrize("name", CORPUS_NAMES)
def test_every_hostile_artifact_is_refused_and_runs_nothing(
    name: str, corpus: dict[str, Hostile], markers: Path, tmp_path: Path
) -> None:
    case = corpus[name]
    inspection = inspect_stream(chunks_of(case.data, 4096))
    with pytest.raises(UnsafeArtifact) as refused:
        check(inspection, case.flavor)
    if case.global_name is not None:
        assert refused.value.global_name == case.global_name
        assert case.global_name in refused.value.message
    path = tmp_path / "artifact"
    path.write_bytes(case.data)
    with pytest.raises(UnsafeArtifact):
        load_artifact(path, case.flavor if case.flavor in ("sklearn", "skops") else "sklearn")
    assert list(markers.iterdir()) == []


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_every_honest_model_is_accepted_and_loads_the_same(
    name: str, zoo: dict[str, Honest], tmp_path: Path
) -> None:
    case = zoo[name]
    path = tmp_path / "model.joblib"
    path.write_bytes(case.data)
    inspection = inspect_file(path)
    assert inspection.problem is None
    assert inspection.kind is Kind.pickle
    assert inspection.detected_flavor == "sklearn"
    loaded, _ = load_artifact(path, "sklearn")
    method = "predict" if hasattr(case.model, "predict") else "transform"
    np.testing.assert_array_equal(
        getattr(loaded, method)(case.inputs), getattr(case.model, method)(case.inputs)
    )


@pytest.mark.parametrize("block", [1, 7, 4096])
def test_streamed_in_any_block_size_the_verdict_is_the_same(
    block: int, zoo: dict[str, Honest], corpus: dict[str, Hostile]
) -> None:
    honest = zoo["column-transformer-onehot"].data
    hostile = corpus["protocol 0"].data
    for data, ok in ((honest, True), (hostile, False)):
        inspection = BackgroundInspection(max_queued=2)
        for i in range(0, len(data), block):
            inspection.feed(data[i : i + block])
        result = inspection.result(timeout=60)
        assert (result.problem is None) is ok, result.problem


def test_a_background_inspection_that_has_decided_never_blocks_the_writer() -> None:
    inspection = BackgroundInspection(max_queued=1)
    inspection.feed(b"\x80\x04\x8c\x05posix\x8c\x06system\x93.")
    for _ in range(50):  # far more than the queue holds: the scanner keeps draining
        inspection.feed(b"x" * 1000)
    result = inspection.result(timeout=30)
    assert result.problem is not None
    assert result.problem.global_name == "posix.system"


DTYPES: list[Any] = [
    "f8",
    ">i4",
    "u1",
    "?",
    "f2",
    "c16",
    "U5",
    "S3",
    "V7",
    "M8[ns]",
    "m8[2s]",
    ("f8", (2, 3)),
    [("a", "<i8"), ("b", "f4"), ("c", "U2")],
    np.dtype([("a", "<i4"), ("b", "u1")], align=True),
    np.dtype({"names": ["x"], "formats": ["u1"], "titles": ["T"]}),
    "O",
    [("o", "O"), ("f", "f4")],
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_inline_arrays_of_every_dtype_are_skipped_exactly(dtype: Any) -> None:
    """An off-by-one in the byte count would leave bytes after STOP, or misparse: refused."""
    array = np.zeros((3, 2), dtype=np.dtype(dtype))
    for order_array in (array, np.asfortranarray(array)):
        buffer = io.BytesIO()
        joblib.dump({"a": order_array, "b": [order_array, 1]}, buffer)
        inspection = inspect_stream(chunks_of(buffer.getvalue(), 5))
        assert inspection.problem is None, inspection.problem
        assert inspection.stats.arrays >= 2


def test_data_is_fine_under_other_flavors_but_not_as_sklearn() -> None:
    # b"\x00" first: no pickle opcode, so random data never starts by parsing as a pickle.
    for data in (b"\x00" + os.urandom(4999), b"", b'{"onnx": true}', b"hello world\n"):
        inspection = inspect_stream(chunks_of(data, 1024))
        assert inspection.kind is Kind.data
        check(inspection, "onnx")
        check(inspection, "sklearn", primary=False)
        with pytest.raises(UnsafeArtifact):
            check(inspection, "sklearn")


def test_skops_models_are_accepted_with_their_trusted_types(tmp_path: Path) -> None:
    import skops.io as sio
    from sklearn.ensemble import GradientBoostingClassifier

    x = np.random.default_rng(0).normal(size=(50, 3))
    y = (x[:, 0] > 0).astype(int)
    model = GradientBoostingClassifier(n_estimators=3).fit(x, y)
    path = tmp_path / "model.skops"
    sio.dump(model, path)
    inspection = inspect_file(path)
    assert inspection.kind is Kind.skops
    assert inspection.problem is None
    assert "sklearn.tree._tree.Tree" in inspection.untrusted_types
    assert inspection.detected_flavor == "skops"
    loaded, _ = load_artifact(path, "skops")
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    with pytest.raises(UnsafeArtifact, match="needs a joblib or pickle file"):
        check(inspection, "sklearn")


def test_a_joblib_file_is_not_a_skops_file(zoo: dict[str, Honest]) -> None:
    inspection = inspect_stream(chunks_of(zoo["svc"].data, 1 << 20))
    with pytest.raises(UnsafeArtifact) as refused:
        check(inspection, "skops")
    assert refused.value.reason is Reason.wrong_format


def test_decompression_bombs_are_refused() -> None:
    bomb = zlib.compress(pickle.dumps(b"\0" * 10_000_000, protocol=4), 9)
    assert len(bomb) < 20_000
    inspection = inspect_stream(chunks_of(bomb, 4096), limits=Limits(max_expanded_bytes=1 << 20))
    assert inspection.problem is not None
    assert inspection.problem.reason is Reason.limit


def test_truncated_and_corrupt_compressed_streams_are_refused(zoo: dict[str, Honest]) -> None:
    compressed = zlib.compress(zoo["svc"].data)
    for broken in (compressed[:-10], compressed[:2] + b"\xff" * 50 + compressed[52:]):
        inspection = inspect_stream(chunks_of(broken, 100))
        with pytest.raises(UnsafeArtifact):
            check(inspection, "sklearn")


def test_resource_limits_refuse_rather_than_exhaust() -> None:
    many_memos = b"\x80\x04]" + b"N\x94" * 1000 + b"."
    inspection = inspect_stream(chunks_of(many_memos, 64), limits=Limits(max_memo=100))
    assert inspection.problem is not None
    assert inspection.problem.reason is Reason.limit
    deep = b"\x80\x04" + b"(" * 1000 + b"N."
    inspection = inspect_stream(chunks_of(deep, 64), limits=Limits(max_marks=100))
    assert inspection.problem is not None
    assert inspection.problem.reason is Reason.limit


def test_every_allow_listed_global_exists() -> None:
    """A typo or a module renamed upstream would otherwise sit silently on the list."""
    missing = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy.core's shim warns on every attribute
        for module_name, names in ALLOWED.items():
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                missing.extend(f"{module_name}.{n}" for n in names)
                continue
            missing.extend(f"{module_name}.{n}" for n in names if not hasattr(module, n))
    # scipy < 1.8 and numpy < 2 module names are kept for old artifacts; they may be absent.
    legacy = ("scipy.sparse.", "numpy.core.")
    assert [m for m in missing if not m.startswith(legacy)] == []


def test_every_scikit_learn_estimator_is_allow_listed() -> None:
    """Upgrading scikit-learn moves classes: rerun `python -m safety.survey --write`."""
    from sklearn.utils.discovery import all_estimators

    missing = [
        f"{cls.__module__}.{cls.__qualname__}"
        for _, cls in all_estimators()
        if cls.__qualname__ not in ALLOWED.get(cls.__module__, ())
    ]
    assert missing == []
