"""Hostile and honest artifacts.

Every hostile artifact here would, if deserialised, write its marker file (or call something that
could): the tests assert each is refused and that no marker appears. `live=True` marks those that
`joblib.load` would really execute; `test_the_hostile_corpus_is_live` proves it in a child process,
so a refusal is never the accident of a payload that would not have run anyway.
"""

from __future__ import annotations

import io
import json
import operator
import os
import pickle
import struct
import subprocess
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np


@dataclass(frozen=True)
class Hostile:
    name: str
    data: bytes
    global_name: str | None
    """The global the refusal must name, when the refusal is about one."""
    live: bool = False
    flavor: str = "sklearn"


@dataclass(frozen=True)
class Honest:
    name: str
    model: Any
    inputs: np.ndarray[Any, Any]
    data: bytes
    """`joblib.dump` of the fitted model."""


class _Reduce:
    """Pickles as `func(*args)`; callable so it can itself be the callee of another reduce."""

    def __init__(self, func: Any, args: tuple[Any, ...]) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.func, self.args

    def __call__(self, *args: Any) -> None:  # pragma: no cover - never called
        raise AssertionError


class _ReduceEx:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, tuple[Any, ...]]:
        return os.system, (self.command,)


class SetStateTrap:
    """A class of our own whose __setstate__ would run: its global is not on any allow-list."""

    def __setstate__(self, state: Any) -> None:  # pragma: no cover - never loaded
        Path(state["marker"]).write_text("pwned")


def _joblib(value: Any, **kwargs: Any) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(value, buffer, **kwargs)
    return buffer.getvalue()


def _unicode(text: str) -> bytes:
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def _stack_global(module: str, name: str) -> bytes:
    return _short(module) + _short(name) + b"\x93"


def _short(text: str) -> bytes:
    data = text.encode()
    return b"\x8c" + bytes([len(data)]) + data


def _skops_with(function: str) -> bytes:
    """A real skops file whose FunctionTransformer's function is renamed to `function`."""
    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer

    honest = sio.dumps(FunctionTransformer(np.log1p).fit(np.ones((2, 2))))
    source = zipfile.ZipFile(io.BytesIO(honest))
    out = io.BytesIO()
    module, _, name = function.rpartition(".")
    with zipfile.ZipFile(out, "w") as target:
        for item in source.infolist():
            content = source.read(item)
            if item.filename == "schema.json":
                schema = json.loads(content)
                text = json.dumps(schema).replace('"numpy"', json.dumps(module))
                content = text.replace('"log1p"', json.dumps(name)).encode()
            target.writestr(item, content)
    return out.getvalue()


def hostile_corpus(marker_dir: Path) -> list[Hostile]:
    """At least forty ways to run code (or hide from the scanner) through a model artifact."""

    def marker(name: str) -> str:
        return str(marker_dir / f"{name}.marker")

    def code(name: str) -> str:
        return f"open({marker(name)!r}, 'w').write('pwned')"

    honest = _joblib(np.arange(3.0))

    def evil_array(tag: str) -> np.ndarray[Any, Any]:
        array = np.empty(2, dtype=object)
        array[0] = _Reduce(os.system, (f"touch {marker(tag)}",))
        array[1] = 1
        return array

    wrapper_scalar = (
        b"\x80\x04"
        + _stack_global("numpy._core.multiarray", "scalar")
        + _stack_global("numpy", "dtype")
        + _short("O8")
        + b"\x89\x88\x87R"  # dtype('O8', False, True)
        + b"(K\x03"
        + _short("|")
        + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK?tb"  # its state
        + _stack_global("joblib.numpy_pickle", "NumpyArrayWrapper")
        + b")\x81"  # NumpyArrayWrapper.__new__()
        + b"\x86R."  # scalar(dtype, wrapper): would return the wrapper itself
    )
    return [
        Hostile(
            "os.system via __reduce__ (joblib)",
            _joblib(_Reduce(os.system, (f"touch {marker('os-system')}",))),
            "posix.system",
            live=True,
        ),
        Hostile(
            "builtins.eval",
            pickle.dumps(_Reduce(eval, (code("eval"),)), protocol=4),
            "builtins.eval",
            live=True,
        ),
        Hostile(
            "builtins.exec",
            pickle.dumps(_Reduce(exec, (code("exec"),)), protocol=4),
            "builtins.exec",
            live=True,
        ),
        Hostile(
            "subprocess.Popen",
            pickle.dumps(_Reduce(subprocess.Popen, (["touch", marker("popen")],)), protocol=4),
            "subprocess.Popen",
            live=True,
        ),
        Hostile(
            "builtins.getattr chain",
            pickle.dumps(
                _Reduce(
                    _Reduce(getattr, (_Reduce(__import__, ("os",)), "system")),
                    (f"touch {marker('getattr')}",),
                ),
                protocol=4,
            ),
            "builtins.getattr",
            live=True,
        ),
        Hostile(
            "operator.methodcaller with importlib.import_module",
            pickle.dumps(
                _Reduce(
                    _Reduce(operator.methodcaller, ("system", f"touch {marker('methodcaller')}")),
                    (_Reduce(__import__("importlib").import_module, ("os",)),),
                ),
                protocol=4,
            ),
            "operator.methodcaller",
            live=True,
        ),
        Hostile(
            "runpy._run_code",
            b"\x80\x04"
            + _stack_global("runpy", "_run_code")
            + _unicode(code("runpy"))
            + b"}\x86R.",
            "runpy._run_code",
            live=True,
        ),
        Hostile(
            "pip.main",
            b"\x80\x04"
            + _stack_global("pip", "main")
            + b"]"
            + _unicode("install")
            + b"a"
            + b"\x85R.",
            "pip.main",
        ),
        Hostile(
            "numpy.testing runstring (exec inside numpy)",
            b"\x80\x04"
            + _stack_global("numpy.testing._private.utils", "runstring")
            + _unicode(code("runstring"))
            + b"}\x86R.",
            "numpy.testing._private.utils.runstring",
            live=True,
        ),
        Hostile(
            "numpy.load (reads another pickle)",
            b"\x80\x04" + _stack_global("numpy", "load") + _unicode("/etc/passwd") + b"\x85R.",
            "numpy.load",
        ),
        Hostile(
            "pickle nested in an object-dtype array inside a joblib file",
            _joblib({"coef_": evil_array("object-array")}),
            "posix.system",
            live=True,
        ),
        Hostile(
            "pickle nested in an object array, zlib-compressed",
            _joblib({"coef_": evil_array("object-array-zlib")}, compress=3),
            "posix.system",
            live=True,
        ),
        Hostile(
            "zlib-compressed joblib",
            _joblib(_Reduce(os.system, (f"touch {marker('zlib')}",)), compress=("zlib", 3)),
            "posix.system",
            live=True,
        ),
        Hostile(
            "gzip-compressed joblib",
            _joblib(_Reduce(os.system, (f"touch {marker('gzip')}",)), compress=("gzip", 3)),
            "posix.system",
            live=True,
        ),
        Hostile(
            "bz2-compressed joblib",
            _joblib(_Reduce(os.system, (f"touch {marker('bz2')}",)), compress=("bz2", 3)),
            "posix.system",
            live=True,
        ),
        Hostile(
            "lzma-compressed joblib",
            _joblib(_Reduce(os.system, (f"touch {marker('lzma')}",)), compress=("lzma", 3)),
            "posix.system",
            live=True,
        ),
        Hostile(
            "xz-compressed joblib",
            _joblib(_Reduce(os.system, (f"touch {marker('xz')}",)), compress=("xz", 3)),
            "posix.system",
            live=True,
        ),
        Hostile(
            "lz4 magic (cannot be inspected)",
            b"\x04\x22\x4d\x18" + pickle.dumps(_Reduce(os.system, ("true",))),
            None,
        ),
        Hostile(
            "zlib stream followed by a second, unscanned stream",
            zlib.compress(honest) + zlib.compress(pickle.dumps(_Reduce(os.system, ("true",)))),
            None,
        ),
        Hostile(
            "protocol 0",
            pickle.dumps(_Reduce(os.system, (f"touch {marker('proto0')}",)), protocol=0),
            "posix.system",
            live=True,
        ),
        Hostile(
            "protocol 1",
            pickle.dumps(_Reduce(os.system, (f"touch {marker('proto1')}",)), protocol=1),
            "posix.system",
            live=True,
        ),
        Hostile(
            "protocol 2",
            pickle.dumps(_Reduce(os.system, (f"touch {marker('proto2')}",)), protocol=2),
            "posix.system",
            live=True,
        ),
        Hostile(
            "protocol 5",
            pickle.dumps(_Reduce(os.system, (f"touch {marker('proto5')}",)), protocol=5),
            "posix.system",
            live=True,
        ),
        Hostile(
            "__reduce_ex__",
            pickle.dumps(_ReduceEx(f"touch {marker('reduce-ex')}"), protocol=4),
            "posix.system",
            live=True,
        ),
        Hostile(
            "Python 2 name __builtin__.eval (mapped by the unpickler)",
            b"\x80\x02c__builtin__\neval\n" + _unicode(code("py2")) + b"\x85R.",
            "builtins.eval",
            live=True,
        ),
        Hostile(
            "STACK_GLOBAL with names from the memo",
            b"\x80\x04"
            + _short("builtins")
            + b"\x94"
            + _short("exec")
            + b"\x94h\x00h\x01\x93"
            + _unicode(code("memo"))
            + b"\x85R.",
            "builtins.exec",
            live=True,
        ),
        Hostile(
            "INST opcode (protocol 0 class call)",
            f"(S'touch {marker('inst')}'\nios\nsystem\n.".encode(),
            "os.system",
            live=True,
        ),
        Hostile(
            "OBJ opcode",
            b"\x80\x02(cposix\nsystem\n" + _unicode(f"touch {marker('obj')}") + b"o.",
            "posix.system",
            live=True,
        ),
        Hostile(
            "__setstate__ of a class of the attacker's",
            pickle.dumps(_state_trap(marker("setstate")), protocol=4),
            "tests.security.corpus.SetStateTrap",
        ),
        Hostile(
            "BUILD on a class (monkeypatching an allowed estimator)",
            b"\x80\x04"
            + _stack_global("sklearn.linear_model._base", "LinearRegression")
            + b"}"
            + _short("predict")
            + _stack_global("numpy", "log1p")
            + b"sb.",
            None,
        ),
        Hostile(
            "copyreg._reconstructor with a non-builtin base",
            b"\x80\x02"
            + b"ccopyreg\n_reconstructor\n"
            + b"csklearn.linear_model._logistic\nLogisticRegression\n"
            + b"csklearn.linear_model._base\nLinearRegression\n"
            + b"N\x87R.",
            None,
        ),
        Hostile(
            "REDUCE of a computed value",
            b"\x80\x04"
            + _stack_global("builtins", "dict")
            + b")R"  # dict()
            + b")R.",  # dict()()
            None,
        ),
        Hostile(
            "object-scalar trampoline returning a NumpyArrayWrapper (parser differential)",
            wrapper_scalar,
            "numpy._core.multiarray.scalar",
        ),
        Hostile(
            "bit generator constructor handed an estimator class",
            b"\x80\x04"
            + _stack_global("numpy.random._pickle", "__bit_generator_ctor")
            + _stack_global("sklearn.linear_model._base", "LinearRegression")
            + b"\x85R.",
            "numpy.random._pickle.__bit_generator_ctor",
        ),
        Hostile(
            "dotted name reaching into an allowed class (protocol 4 getattr walk)",
            b"\x80\x04"
            + _stack_global("sklearn.base", "BaseEstimator.__init__.__globals__")
            + b".",
            "sklearn.base.BaseEstimator.__init__.__globals__",
        ),
        Hostile("persistent id", b"\x80\x02P1\n.", None),
        Hostile("copyreg extension registry (EXT1)", b"\x80\x02\x82\x01.", None),
        Hostile("out-of-band buffer", b"\x80\x05\x97.", None),
        Hostile(
            "a pickle followed by a zip (polyglot)",
            honest + _zip_bytes({"data.pkl": pickle.dumps(_Reduce(os.system, ("true",)))}),
            None,
        ),
        Hostile(
            "zip holding a malicious pickle, unknown flavor",
            _zip_bytes({"archive/data.pkl": pickle.dumps(_Reduce(os.system, ("true",)))}),
            "posix.system",
            flavor="pytorch",
        ),
        Hostile(
            "malicious pickle under an unknown flavor",
            pickle.dumps(_Reduce(os.system, (f"touch {marker('unknown-flavor')}",))),
            "posix.system",
            flavor="custom",
        ),
        Hostile("joblib < 0.10 format (companion files)", b"ZF0x10" + honest, None),
        Hostile(
            "array claiming a terabyte (memory bomb on load)",
            _huge_array_claim(),
            None,
        ),
        Hostile(
            "skops file naming os.system",
            _skops_with("posix.system"),
            "posix.system",
            flavor="skops",
        ),
        Hostile(
            "skops file naming builtins.exec",
            _skops_with("builtins.exec"),
            "builtins.exec",
            flavor="skops",
        ),
    ]


def _state_trap(marker: str) -> SetStateTrap:
    trap = SetStateTrap()
    trap.__dict__["marker"] = marker
    return trap


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return out.getvalue()


def _huge_array_claim() -> bytes:
    """A real joblib file (unframed) with its array's shape rewritten to 2**38 float64s."""
    data = _joblib(np.arange(4.0), protocol=2)
    assert data.count(b"K\x04\x85") == 1
    return data.replace(b"K\x04\x85", b"\x8a\x05\x00\x00\x00\x00\x40\x85")


ZOO_NAMES = (
    "linear-regression",
    "logistic-regression",
    "random-forest",
    "gradient-boosting",
    "svc",
    "kmeans",
    "pipeline-scaler",
    "column-transformer-onehot",
)


def honest_zoo() -> list[Honest]:
    """The models issue 5 names, fitted on small data and saved with joblib."""
    from sklearn.cluster import KMeans
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler
    from sklearn.svm import SVC

    rng = np.random.default_rng(7)
    x = rng.normal(size=(120, 4))
    labels = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    target = x @ np.array([1.0, -2.0, 0.5, 3.0]) + 0.1
    mixed = x.copy()
    mixed[:, 3] = rng.integers(0, 3, size=len(x))
    models: list[tuple[str, Any, np.ndarray[Any, Any]]] = [
        ("linear-regression", LinearRegression().fit(x, target), x),
        ("logistic-regression", LogisticRegression().fit(x, labels), x),
        (
            "random-forest",
            RandomForestClassifier(n_estimators=10, random_state=0).fit(x, labels),
            x,
        ),
        (
            "gradient-boosting",
            GradientBoostingClassifier(n_estimators=10, random_state=0).fit(x, labels),
            x,
        ),
        ("svc", SVC().fit(x, labels), x),
        ("kmeans", KMeans(n_clusters=3, n_init=2, random_state=0).fit(x), x),
        (
            "pipeline-scaler",
            make_pipeline(StandardScaler(), LogisticRegression()).fit(x, labels),
            x,
        ),
        (
            "column-transformer-onehot",
            make_pipeline(
                ColumnTransformer(
                    [
                        ("num", StandardScaler(), [0, 1, 2]),
                        ("cat", OneHotEncoder(handle_unknown="ignore"), [3]),
                    ]
                ),
                LogisticRegression(),
            ).fit(mixed, labels),
            mixed,
        ),
    ]
    assert tuple(name for name, _, _ in models) == ZOO_NAMES
    return [Honest(name, model, inputs, _joblib(model)) for name, model, inputs in models]
