"""Loading a model where a hostile artifact can do least harm.

A verified artifact is inspected here first (`safety`: the pickle-opcode scan against the
allow-list, or skops' trusted types); a refusal never reaches a deserialiser. Then it is loaded
once in a child process, and only if that succeeds, here.

The children come from a zygote: one process started from a fresh interpreter
(`python -I -B -m serving.isolation --zygote`) with an empty environment (no `BERTH_*`, no
`AWS_*`: no credentials) and an empty working directory, which imports numpy, scipy, joblib and
every allow-listed scikit-learn module once, then forks one child per load. So a load in
isolation costs a fork, not an interpreter start and a second of imports: isolation keeps up
with a promotion's rollout. Each child, before it reads a byte:

- closes its line to serving (it reports to the zygote through a pipe of its own, and cannot
  reach serving or forge another load's answer);
- limits the memory it may add to what the zygote maps (`BERTH_LOAD_MEMORY_BYTES`), its CPU
  time (`BERTH_LOAD_CPU_SECONDS`), file writes (none) and core dumps; the zygote kills it past a
  wall-clock timeout too.

The artifact reaches it as a read-only descriptor passed over a Unix socket, never as a path.
Only an artifact that loaded there is loaded here, from the same descriptor, with the allow-list
enforced again by the unpickler: a model that hangs, eats memory or crashes on load takes down a
child, never serving, and predict stays in-process, a method call with no IPC per request.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safety import UnsafeArtifact, check, inspect_file
from safety.artifacts import PICKLE_FLAVORS, SKOPS_FLAVORS, Inspection
from safety.errors import Reason
from safety.loading import load_joblib, load_skops
from serving.loader import Predictor, predictor_of

_MAX_MESSAGE = 64 * 1024
_ZYGOTE_START_SECONDS = 180.0


class IsolatedLoadFailed(Exception):
    """The child could not load the artifact within its limits, or died trying."""


@dataclass(frozen=True)
class IsolatedLoader:
    """`load(path, flavor)` for `serving.loader.Loader`: inspect, load in a child, then here."""

    memory_bytes: int
    cpu_seconds: int
    wall_seconds: float
    _zygote: _Zygote = field(default_factory=lambda: _Zygote(), compare=False, repr=False)

    def __call__(self, path: Path, flavor: str) -> Predictor:
        with path.open("rb") as artifact:
            # Every later step reads through this descriptor: what was inspected is what loads.
            pinned = Path(f"/proc/self/fd/{artifact.fileno()}")
            inspection = inspect_file(pinned)
            check(inspection, flavor)
            answer = self._zygote.load(
                artifact.fileno(),
                {
                    "flavor": flavor,
                    "memory_bytes": self.memory_bytes,
                    "cpu_seconds": self.cpu_seconds,
                    "wall_seconds": self.wall_seconds,
                },
                timeout=self.wall_seconds + 30,
            )
            _raise_unless_loaded(answer, self)
            return predictor_of(_deserialise(pinned, flavor, inspection))

    def close(self) -> None:
        """Stop the zygote (it is started again on the next load)."""
        self._zygote.close()


def _deserialise(path: Path, flavor: str, inspection: Inspection) -> Any:
    if flavor in PICKLE_FLAVORS:
        return load_joblib(path)
    if flavor in SKOPS_FLAVORS:
        return load_skops(path, inspection)
    raise UnsafeArtifact(f"no loader for flavor '{flavor}'", reason=Reason.wrong_format)


def _raise_unless_loaded(answer: dict[str, Any], loader: IsolatedLoader) -> None:
    result = answer.get("result") or {}
    if answer.get("exit_code") == 0 and result.get("ok"):
        return
    if result.get("unsafe"):
        raise UnsafeArtifact(
            str(result.get("message")),
            reason=_reason(result.get("reason")),
            global_name=result.get("global"),
        )
    if answer.get("timed_out"):
        raise IsolatedLoadFailed(
            f"the isolated load did not finish within {loader.wall_seconds:g} s; killed"
        )
    if result.get("message"):
        raise IsolatedLoadFailed(f"the isolated load failed: {result['message']}")
    killed_by = answer.get("signal")
    if killed_by:
        name = signal.Signals(killed_by).name
        if killed_by in (signal.SIGXCPU, signal.SIGKILL):
            raise IsolatedLoadFailed(
                f"the isolated load was killed by {name}: over its CPU limit "
                f"({loader.cpu_seconds} s, BERTH_LOAD_CPU_SECONDS)"
            )
        if killed_by == signal.SIGXFSZ:
            raise IsolatedLoadFailed("the isolated load was killed by SIGXFSZ: it wrote a file")
        raise IsolatedLoadFailed(f"the isolated load was killed by {name}")
    raise IsolatedLoadFailed(
        f"the isolated load exited with status {answer.get('exit_code')} and no result"
    )


def _reason(value: Any) -> Reason:
    try:
        return Reason(value)
    except ValueError:
        return Reason.unsafe_construct


def _bare_environment() -> dict[str, str]:
    """No credentials, no configuration: a search path, one thread per numeric library."""
    return {
        "PATH": "/usr/bin:/bin",
        "LC_ALL": "C.UTF-8",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


# --- serving's side of the zygote ---------------------------------------------------------------


class _Zygote:
    """The zygote process and serving's socket to it. Loads through it run one at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._socket: socket.socket | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None

    def load(self, fd: int, request: dict[str, Any], *, timeout: float) -> dict[str, Any]:
        with self._lock:
            self._ensure_started()
            assert self._socket is not None
            try:
                self._socket.settimeout(timeout)
                os.lseek(fd, 0, os.SEEK_SET)
                socket.send_fds(self._socket, [json.dumps(request).encode()], [fd])
                answer = _read_line(self._socket)
            except (OSError, ValueError) as exc:
                # A zygote that stops answering is replaced; the load in question fails.
                self._stop()
                raise IsolatedLoadFailed(f"the loading zygote failed: {exc}") from exc
            return answer

    def _ensure_started(self) -> None:
        if self._process is not None and self._process.poll() is None:
            return
        self._stop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._workdir = tempfile.TemporaryDirectory(prefix="berth-zygote-")
        try:
            self._process = subprocess.Popen(  # noqa: S603 - our own module, fixed arguments
                [sys.executable, "-I", "-B", "-m", "serving.isolation", str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                env=_bare_environment(),
                cwd=self._workdir.name,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
        finally:
            theirs.close()
        self._socket = ours
        ours.settimeout(_ZYGOTE_START_SECONDS)
        try:
            ready = _read_line(ours)
        except (OSError, ValueError) as exc:
            self._stop()
            raise IsolatedLoadFailed(f"the loading zygote did not start: {exc}") from exc
        if not ready.get("ready"):
            self._stop()
            raise IsolatedLoadFailed("the loading zygote did not start")

    def _stop(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        if self._process is not None:
            if self._process.poll() is None:
                self._process.kill()
            self._process.wait(timeout=10)
            self._process = None
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def close(self) -> None:
        with self._lock:
            self._stop()


def _read_line(sock: socket.socket) -> dict[str, Any]:
    data = bytearray()
    while not data.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            raise ValueError("the zygote closed its socket")
        data += chunk
        if len(data) > _MAX_MESSAGE:
            raise ValueError("the zygote's answer is too long")
    value = json.loads(bytes(data))
    if not isinstance(value, dict):
        raise ValueError("the zygote's answer is not an object")
    return value


# --- the zygote -----------------------------------------------------------------------------


def _preload() -> None:
    """Import once what loads import, so each forked child starts warm."""
    import importlib
    import warnings

    import joblib  # noqa: F401
    import numpy  # noqa: F401
    import sklearn  # noqa: F401

    import safety.loading  # noqa: F401
    from safety.allowlist import ALLOWED

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for module in ALLOWED:
            with contextlib.suppress(Exception):
                importlib.import_module(module)


def _zygote(fd: int) -> int:
    line = socket.socket(fileno=fd)
    _preload()
    line.sendall(b'{"ready": true}\n')
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(line, _MAX_MESSAGE, 1)
        except OSError:
            return 0
        if not message:
            return 0  # serving closed the socket: stop
        try:
            request = json.loads(message)
            answer = _fork_and_load(fds[0], request, line) if fds else {"exit_code": -1}
        except Exception as exc:  # the zygote must outlive any one request
            answer = {"exit_code": -1, "result": {"message": f"{type(exc).__name__}: {exc}"}}
        finally:
            for received in fds:
                os.close(received)
        line.sendall(json.dumps(answer).encode() + b"\n")


def _fork_and_load(fd: int, request: dict[str, Any], line: socket.socket) -> dict[str, Any]:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        code = 70
        try:
            os.close(read_end)
            line.close()  # the child never talks to serving
            _limit_self(int(request["memory_bytes"]), int(request["cpu_seconds"]))
            code = _child_load(fd, str(request["flavor"]), write_end, request["memory_bytes"])
        finally:
            os._exit(code)
    os.close(write_end)
    deadline = time.monotonic() + float(request["wall_seconds"])
    output = bytearray()
    timed_out = False
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            timed_out = True
            os.kill(pid, signal.SIGKILL)
            break
        readable, _, _ = select.select([read_end], [], [], remaining)
        if readable:
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            if len(output) < _MAX_MESSAGE:
                output += chunk
    os.close(read_end)
    _, status = os.waitpid(pid, 0)
    answer: dict[str, Any] = {"timed_out": timed_out}
    if os.WIFSIGNALED(status):
        answer["signal"] = os.WTERMSIG(status)
    else:
        answer["exit_code"] = os.WEXITSTATUS(status)
    lines = bytes(output).decode("utf-8", "replace").splitlines()
    if lines:
        with contextlib.suppress(ValueError):
            answer["result"] = json.loads(lines[-1])
    return answer


def _limit_self(memory_bytes: int, cpu_seconds: int) -> None:
    """Bound this process: `memory_bytes` of address space beyond what it already maps (the
    zygote's preloaded libraries), `cpu_seconds` of CPU, no file writes, no core dumps."""
    import resource

    mapped = int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    limit = mapped + memory_bytes
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    # The soft limit sends SIGXCPU; the hard one, a second later, SIGKILL.
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _child_load(fd: int, flavor: str, out: int, memory_bytes: int) -> int:
    from safety.loading import load_artifact

    def report(**fields: Any) -> None:
        os.write(out, json.dumps(fields).encode() + b"\n")

    try:
        model, _ = load_artifact(Path(f"/proc/self/fd/{fd}"), flavor)
        methods = sorted(m for m in ("predict", "predict_proba") if hasattr(model, m))
    except UnsafeArtifact as exc:
        report(
            ok=False,
            unsafe=True,
            message=exc.message,
            reason=exc.reason.value,
            **{"global": exc.global_name},
        )
        return 3
    except MemoryError:
        report(ok=False, message=f"over its memory limit ({memory_bytes} bytes)")
        return 4
    except BaseException as exc:  # the child exists to contain whatever loading raises
        report(ok=False, message=f"{type(exc).__name__}: {str(exc)[:500]}")
        return 5
    report(ok=True, type=type(model).__name__, methods=methods)
    return 0


if __name__ == "__main__":
    sys.exit(_zygote(int(sys.argv[1])))
