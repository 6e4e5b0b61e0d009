"""Loading a model where a hostile artifact can do least harm.

A verified artifact is inspected here first (`safety`: the pickle-opcode scan against the
allow-list, or skops' trusted types); a refusal never reaches a deserialiser. Then it is loaded
once in a child process:

- a fresh interpreter (`python -I -B -m serving.isolation`), so none of this process's memory
  (the registry token, connections) is inherited, and an environment with no credentials at all:
  no `BERTH_*`, no `AWS_*`; its working directory is empty and temporary;
- the artifact arrives as its standard input, a read-only descriptor: the child is never told
  where the file lives;
- before reading a byte it limits itself: address space (`BERTH_LOAD_MEMORY_BYTES`), CPU time
  (`BERTH_LOAD_CPU_SECONDS`), no file writes (RLIMIT_FSIZE 0), no core dumps; the parent kills it
  past a wall-clock timeout too.

Only an artifact that loaded there, within those limits, is loaded here, from the same open
descriptor, with the allow-list enforced again by the unpickler. A model that hangs, eats memory or
crashes on load takes down a child, never serving, and the predict path stays in-process: a model
is called as a Python object, with no IPC per request.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safety import UnsafeArtifact, check, inspect_file
from safety.artifacts import PICKLE_FLAVORS, SKOPS_FLAVORS, Inspection
from safety.loading import load_joblib, load_skops
from serving.loader import Predictor, predictor_of

_RESULT_PREFIX = "berth-isolation-result:"


class IsolatedLoadFailed(Exception):
    """The child could not load the artifact within its limits, or died trying."""


@dataclass(frozen=True, slots=True)
class IsolatedLoader:
    """`load(path, flavor)` for `serving.loader.Loader`: inspect, load in a child, then here."""

    memory_bytes: int
    cpu_seconds: int
    wall_seconds: float

    def __call__(self, path: Path, flavor: str) -> Predictor:
        with path.open("rb") as artifact:
            # Every later step reads through this descriptor: what was inspected is what loads.
            pinned = Path(f"/proc/self/fd/{artifact.fileno()}")
            inspection = inspect_file(pinned)
            check(inspection, flavor)
            self._preflight(artifact.fileno(), flavor)
            return predictor_of(_deserialise(pinned, flavor, inspection))

    def _preflight(self, fd: int, flavor: str) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        with tempfile.TemporaryDirectory(prefix="berth-load-") as empty:
            try:
                completed = subprocess.run(  # noqa: S603 - our own module, fixed arguments
                    [
                        sys.executable,
                        "-I",
                        "-B",
                        "-m",
                        "serving.isolation",
                        flavor,
                        str(self.memory_bytes),
                        str(self.cpu_seconds),
                    ],
                    stdin=fd,
                    capture_output=True,
                    cwd=empty,
                    env=_bare_environment(),
                    timeout=self.wall_seconds,
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                raise IsolatedLoadFailed(
                    f"the isolated load did not finish within {self.wall_seconds:g} s; killed"
                ) from exc
        result = _result(completed.stdout)
        if completed.returncode == 0 and result.get("ok"):
            return
        if result.get("unsafe"):
            raise UnsafeArtifact(
                str(result.get("message")),
                reason=_reason(result.get("reason")),
                global_name=result.get("global"),
            )
        raise IsolatedLoadFailed(_explain(completed.returncode, result, self))


def _deserialise(path: Path, flavor: str, inspection: Inspection) -> Any:
    if flavor in PICKLE_FLAVORS:
        return load_joblib(path)
    if flavor in SKOPS_FLAVORS:
        return load_skops(path, inspection)
    raise UnsafeArtifact(f"no loader for flavor '{flavor}'", reason=_reason("wrong_format"))


def _bare_environment() -> dict[str, str]:
    """No credentials, no configuration: a path to find nothing, one thread per library."""
    return {
        "PATH": "/usr/bin:/bin",
        "LC_ALL": "C.UTF-8",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def _result(stdout: bytes) -> dict[str, Any]:
    for line in reversed(stdout.decode("utf-8", "replace").splitlines()):
        if line.startswith(_RESULT_PREFIX):
            try:
                value = json.loads(line[len(_RESULT_PREFIX) :])
            except ValueError:
                return {}
            return value if isinstance(value, dict) else {}
    return {}


def _reason(value: Any) -> Any:
    from safety.errors import Reason

    try:
        return Reason(value)
    except ValueError:
        return Reason.unsafe_construct


def _explain(returncode: int, result: dict[str, Any], loader: IsolatedLoader) -> str:
    if result.get("message"):
        return f"the isolated load failed: {result['message']}"
    if returncode < 0:
        name = signal.Signals(-returncode).name
        if -returncode in (signal.SIGXCPU, signal.SIGKILL):
            return (
                f"the isolated load was killed by {name}: over its CPU limit "
                f"({loader.cpu_seconds} s, BERTH_LOAD_CPU_SECONDS)"
            )
        if -returncode == signal.SIGXFSZ:
            return "the isolated load was killed by SIGXFSZ: it tried to write a file"
        return f"the isolated load was killed by {name}"
    return f"the isolated load exited with status {returncode} and no result"


# --- the child ------------------------------------------------------------------------------


def _limit_self(memory_bytes: int, cpu_seconds: int) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    # The soft limit sends SIGXCPU; the hard one, a second later, SIGKILL.
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _report(**fields: Any) -> None:
    sys.stdout.write(_RESULT_PREFIX + json.dumps(fields) + "\n")
    sys.stdout.flush()


def _child(argv: list[str]) -> int:
    flavor, memory_bytes, cpu_seconds = argv[0], int(argv[1]), int(argv[2])
    _limit_self(memory_bytes, cpu_seconds)
    from safety.loading import load_artifact

    try:
        model, _ = load_artifact(Path("/proc/self/fd/0"), flavor)
        methods = sorted(m for m in ("predict", "predict_proba") if hasattr(model, m))
    except UnsafeArtifact as exc:
        _report(
            ok=False,
            unsafe=True,
            message=exc.message,
            reason=exc.reason.value,
            **{"global": exc.global_name},
        )
        return 3
    except MemoryError:
        _report(ok=False, message=f"over its memory limit ({memory_bytes} bytes)")
        return 4
    except BaseException as exc:  # the child exists to contain whatever loading raises
        _report(ok=False, message=f"{type(exc).__name__}: {str(exc)[:500]}")
        return 5
    _report(ok=True, type=type(model).__name__, methods=methods)
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
