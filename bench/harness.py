"""What every `make bench*` script shares: pinned child processes, wrk runs, results files.

Processes are the test suite's `ServiceProcess` (tests/fixtures/servers.py) with a `taskset`
prefix, so a server under measurement owns one core and the load generator the other.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.fixtures.servers import ServiceProcess, free_port  # noqa: E402

RESULTS = REPO_ROOT / "bench" / "results"
VENVS = REPO_ROOT / "bench" / ".venvs"
SERVER_CORE = "0"
LOAD_CORE = "1"

__all__ = ["ServiceProcess", "free_port"]


def have_taskset() -> bool:
    return shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2


def pinned(core: str, argv: Sequence[str]) -> list[str]:
    """`argv` run on one core (unpinned on a one-core machine, where pinning means nothing)."""
    return ["taskset", "-c", core, *argv] if have_taskset() else list(argv)


class Process(ServiceProcess):
    """Any command as a child process, pinned to a core, healthy once `health_path` answers.

    `ServiceProcess` builds `python -m <module> --host --port`; peers and the Flask baseline are
    other commands, so the argument list is replaced wholesale (the port is still chosen there).
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        core: str | None,
        env: Mapping[str, str],
        port: int,
        log_path: Path,
        health_path: str = "/healthz",
    ) -> None:
        super().__init__([], env=env, port=port, log_path=log_path, health_path=health_path)
        self.args = pinned(core, argv) if core is not None else list(argv)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def wait_until(what: str, check: Any, timeout: float = 60, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (httpx.HTTPError, OSError) as exc:
            last = exc
        time.sleep(interval)
    raise TimeoutError(f"{what}: not within {timeout} s (last: {last!r})")


@dataclass(frozen=True)
class Endpoint:
    """Where one workload is answered and how a request body looks there."""

    url: str
    body: Callable[[list[list[float]]], bytes]
    headers: dict[str, str] = field(default_factory=dict)


def inputs_body(batch: list[list[float]]) -> bytes:
    return json.dumps({"inputs": batch}).encode()


# --- Berth's own processes ------------------------------------------------------------------


def registry_env(database_url: str, work: Path) -> dict[str, str]:
    """A registry's environment: `database_url`, artifacts and data under `work`."""
    return dict(os.environ) | {
        "BERTH_DATABASE_URL": database_url,
        "BERTH_ARTIFACT_STORE": f"file://{work / 'artifacts'}",
        "BERTH_DATA_DIR": str(work / "data"),
    }


def registry_cli(env: Mapping[str, str], *args: str) -> str:
    """`python -m registry ARGS` on `env`'s database; its standard output."""
    return subprocess.run(
        [sys.executable, "-m", "registry", *args],
        env=dict(env),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def mint_token(env: Mapping[str, str], name: str, role: str) -> str:
    """A token straight on the database, as `python -m registry token` makes the first one."""
    out = registry_cli(env, "token", "--name", name, "--role", role)
    return str(json.loads(out.strip().splitlines()[-1])["token"])


def registry_process(
    env: Mapping[str, str], log_path: Path, *, core: str | None = None, port: int | None = None
) -> Process:
    """`python -m registry serve` (not started)."""
    port = port or free_port()
    argv = [sys.executable, "-m", "registry", "serve", "--host", "127.0.0.1", "--port", str(port)]
    return Process(argv, core=core, env=env, port=port, log_path=log_path)


def serving_process(env: Mapping[str, str], log_path: Path, *, core: str | None = None) -> Process:
    """`python -m serving` (not started)."""
    port = free_port()
    argv = [sys.executable, "-m", "serving", "--host", "127.0.0.1", "--port", str(port)]
    return Process(argv, core=core, env=env, port=port, log_path=log_path)


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank `q`th percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


# --- wrk --------------------------------------------------------------------------------------

# The summary comes out as one JSON line from wrk's `done` hook: exact percentiles (wrk keeps a
# full histogram), the request count and every error class, without parsing wrk's prose.
LUA_TEMPLATE = """
wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
{headers}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\nBENCH_JSON {{"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f}}\\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
"""


def lua_string(text: str) -> str:
    return "[==[" + text + "]==]"


def wrk_script(body: bytes, headers: Mapping[str, str], directory: Path) -> Path:
    lines = "\n".join(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items())
    script = LUA_TEMPLATE.format(body=lua_string(body.decode()), headers=lines)
    handle, name = tempfile.mkstemp(prefix="berth-wrk-", suffix=".lua", dir=directory)
    with os.fdopen(handle, "w") as out:
        out.write(script)
    return Path(name)


@dataclass(frozen=True)
class WrkRun:
    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    error_detail: dict[str, int]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def wrk(url: str, script: Path, *, connections: int, duration: float) -> WrkRun:
    """One wrk run, pinned to the load core: one thread drives every connection."""
    argv = pinned(
        LOAD_CORE,
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            url,
        ],
    )
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=duration + 60)
    line = next(
        (ln for ln in out.stdout.splitlines() if ln.startswith("BENCH_JSON ")),
        None,
    )
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{out.stdout}\n{out.stderr}")
    raw = json.loads(line.removeprefix("BENCH_JSON "))
    detail = {k: int(raw[k]) for k in ("connect", "read", "write", "status", "timeout")}
    return WrkRun(
        requests=int(raw["requests"]),
        seconds=raw["duration_us"] / 1e6,
        p50_ms=raw["p50_us"] / 1000,
        p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
        errors=sum(detail.values()),
        error_detail=detail,
    )


@dataclass
class Measurement:
    """Repeated wrk runs of one configuration; each figure is the median over the repeats."""

    runs: list[WrkRun] = field(default_factory=list)

    def median(self) -> dict[str, float]:
        return {
            "rps": round(statistics.median(r.rps for r in self.runs), 1),
            "p50_ms": round(statistics.median(r.p50_ms for r in self.runs), 3),
            "p99_ms": round(statistics.median(r.p99_ms for r in self.runs), 3),
            "errors": sum(r.errors for r in self.runs),
        }

    def as_json(self) -> dict[str, Any]:
        return {"median": self.median(), "repeats": [asdict(r) for r in self.runs]}


# --- results ----------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "cpu_model": next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        )
        if Path("/proc/cpuinfo").exists()
        else platform.processor(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "git": git_head(),
    }


def git_head() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_results(name: str, result: dict[str, Any]) -> Path:
    """bench/results/<name>-<timestamp>.json and <name>-latest.json; returns the first."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    text = json.dumps(result, indent=2) + "\n"
    path = RESULTS / f"{name}-{stamp}.json"
    path.write_text(text)
    (RESULTS / f"{name}-latest.json").write_text(text)
    return path


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"
