"""Profile proof: where a serving process spends its time under predict load (issue 6).

Starts the same setup as `make bench` for the LinearRegression workload (registry, push, promote,
one `python -m serving` pinned to core 0 with auth on, then the registry stopped), drives it with
wrk (16 connections, one row, pinned to core 1), and samples it with py-spy (from PyPI, in
bench/.venvs/tools) without pausing it (`--nonblocking`):

  bench/results/profile-serving.svg          flame graph
  bench/results/profile-serving.speedscope.json
  bench/results/profile-serving.txt          collapsed stacks (py-spy raw)
  bench/results/profile-serving-dump.txt     `py-spy dump` of every thread, mid-load
  bench/results/profile-latest.json          summary: top frames by own and total samples,
                                             and every sample that touches the database, the
                                             registry client or an HTTP client (there should be
                                             none on the predict path)

    make bench-profile       # or: .venv/bin/python bench/profile_serving.py --seconds 15
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import LOAD_CORE, RESULTS, machine, now, pinned, write_results, wrk, wrk_script
from peers import ensure_venv
from predict import HEADLINE, Bench, rows

# Frames that would mean a call out of the process on the request path.
FORBIDDEN = {
    "database": re.compile(r"sqlalchemy|psycopg|sqlite3|registry/(repository|db|service)\.py"),
    "registry client": re.compile(r"serving/registry_client\.py|serving/follower\.py"),
    "http client": re.compile(r"httpx/|httpcore/"),
}
REQUEST_PATH = re.compile(r"serving/(api|service|routing|inputs)\.py")


def py_spy(venv: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        pinned(LOAD_CORE, [str(venv / "bin" / "py-spy"), *args]),
        capture_output=True,
        text=True,
        check=True,
    )


def frame_name(frame: str) -> str:
    """`predict (serving/service.py:120)` -> `predict (serving/service.py)`: lines merged."""
    return re.sub(r":\d+\)$", ")", frame.strip())


def summarise(collapsed: Path) -> dict[str, Any]:
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    forbidden: dict[str, collections.Counter[str]] = {k: collections.Counter() for k in FORBIDDEN}
    samples = request_samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [frame_name(f) for f in stack.split(";")]
        samples += count
        on_request_path = any(REQUEST_PATH.search(f) for f in frames)
        request_samples += count if on_request_path else 0
        own[frames[-1]] += count
        for name in set(frames):
            total[name] += count
        for what, pattern in FORBIDDEN.items():
            if on_request_path and any(pattern.search(f) for f in frames):
                forbidden[what][frames[-1]] += count

    def top(counter: collections.Counter[str], n: int) -> list[dict[str, Any]]:
        return [
            {"frame": name, "samples": c, "share": round(c / samples, 4)}
            for name, c in counter.most_common(n)
        ]

    return {
        "samples": samples,
        "request_path_samples": request_samples,
        "top_own": top(own, 25),
        "top_total": top(total, 40),
        "calls_out_on_request_path": {
            what: {"samples": sum(c.values()), "frames": dict(c.most_common(10))}
            for what, c in forbidden.items()
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=15, help="per py-spy recording")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rows", type=int, default=1, help="rows per request")
    parser.add_argument("--name", default="profile", help="results file prefix")
    parser.add_argument("--server", default=HEADLINE["linear"])
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--quick", action="store_true", help="5 s recordings")
    args = parser.parse_args()
    if args.quick:
        args.seconds = 5

    tools = ensure_venv("tools", ["py-spy"])
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = "profile-serving" if args.name == "profile" else args.name
    collapsed = RESULTS / f"{stem}.txt"
    with tempfile.TemporaryDirectory(prefix="berth-profile-") as scratch:
        bench = Bench(Path(scratch), ["linear"])
        with bench.server(args.server, "linear") as endpoint:
            pid = bench.serving_pid
            script = wrk_script(endpoint.body(rows(args.rows)), endpoint.headers, bench.workdir)
            load_seconds = 3 * args.seconds + 8
            load: dict[str, Any] = {}
            driver = threading.Thread(
                target=lambda: load.update(
                    run=wrk(
                        endpoint.url, script, connections=args.connections, duration=load_seconds
                    )
                )
            )
            driver.start()
            time.sleep(3)  # past the warm-up
            common = [
                "record",
                "--pid",
                str(pid),
                "--nonblocking",
                "--rate",
                str(args.rate),
                "--duration",
                str(args.seconds),
            ]
            py_spy(tools, *common, "--format", "raw", "--output", str(collapsed))
            dump = py_spy(tools, "dump", "--pid", str(pid)).stdout
            (RESULTS / f"{stem}-dump.txt").write_text(dump)
            py_spy(
                tools,
                *common,
                "--format",
                "flamegraph",
                "--output",
                str(RESULTS / f"{stem}.svg"),
            )
            py_spy(
                tools,
                *common,
                "--format",
                "speedscope",
                "--output",
                str(RESULTS / f"{stem}.speedscope.json"),
            )
            driver.join()
    run = load["run"]
    summary = summarise(collapsed)
    out = summary["calls_out_on_request_path"]
    clean = all(v["samples"] == 0 for v in out.values())
    result = {
        "benchmark": "profile",
        "at": now(),
        "server": args.server,
        "load": {
            "connections": args.connections,
            "rps": round(run.rps, 1),
            "p50_ms": run.p50_ms,
            "p99_ms": run.p99_ms,
            "errors": run.errors,
        },
        "no_calls_out_on_request_path": clean,
        **summary,
        "files": [
            str(p.relative_to(RESULTS.parents[1]))
            for p in (
                collapsed,
                RESULTS / f"{stem}.svg",
                RESULTS / f"{stem}.speedscope.json",
                RESULTS / f"{stem}-dump.txt",
            )
        ],
        "setup": {
            "py_spy": f"--nonblocking --rate {args.rate}, {args.seconds} s per recording",
            **machine(),
        },
    }
    path = write_results(args.name, result)
    print(f"load: {run.rps:,.0f} req/s at {args.connections} connections, errors {run.errors}")
    print(f"samples: {summary['samples']}, on the request path: {summary['request_path_samples']}")
    print("top frames by own samples:")
    for row in summary["top_own"][:15]:
        print(f"  {row['share']:6.1%}  {row['frame']}")
    for what, v in out.items():
        print(f"request-path samples in {what}: {v['samples']}")
    print(f"no database / registry / HTTP-client call on the request path: {clean}")
    print(f"results: {path}")
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
