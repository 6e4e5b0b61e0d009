"""Benchmark: Berth's predict path against the bare floor, the Flask baseline and peers (issue 6).

Every server runs as ONE process pinned to core 0 (`taskset -c 0`); wrk runs pinned to core 1 with
one thread. Workloads: LinearRegression (10 features) and RandomForestRegressor (50 trees, depth
8, 10 features), trained here and saved with joblib. For each workload and server: one row per
request at 1, 16 and 64 connections, and 64-row requests at 16 connections; each figure is the
median of `--repeat` runs of `--duration` seconds. A workload's servers are all up at once and
their runs interleave (each repeat runs every server in turn), so a machine whose speed drifts
meets every server alike: the ratios are the figures to trust.

Servers:
  floor        bare Starlette on uvicorn calling model.predict (bench/apps/starlette_floor.py)
  flask        the common Flask example under gunicorn, 1 sync worker (bench/apps/flask_app.py)
  berth-*      `python -m serving` with authentication ON (a reader token per request), fed by
               `python -m registry serve` (SQLite + a local directory) into which the models were
               pushed with `berth.Client.push` and promoted to `production`. The registry runs on
               core 1 during setup only and is stopped before any load: serving answers alone.
               The variants differ only by environment: BERTH_BATCHING and BERTH_ONNX.
  mlflow       `mlflow models serve --env-manager local` (own virtualenv; --peers)
  mlserver     MLServer + mlserver-sklearn, 1 worker, no batching, parallel_workers 0 (--peers)

Prints a table and every target with PASS/FAIL; writes bench/results/predict-<timestamp>.json and
bench/results/predict-latest.json.

    make bench                                      # all of the above but the peers
    make bench-peers                                # with MLflow and MLServer
    .venv/bin/python bench/predict.py --quick       # a smoke run: 3 s, one repeat
    .venv/bin/python bench/predict.py --workloads forest --servers flask berth-onnx
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    LOAD_CORE,
    SERVER_CORE,
    Endpoint,
    Measurement,
    Process,
    free_port,
    inputs_body,
    machine,
    mint_token,
    now,
    registry_cli,
    registry_env,
    registry_process,
    serving_process,
    verdict,
    wait_until,
    write_results,
    wrk,
    wrk_script,
)
from peers import PEERS, PeerServer

FEATURES = 10
MODEL_PREFIX = "bench-"
CONNECTIONS = (1, 16, 64)
BATCH_ROWS = 64
BATCH_CONNECTIONS = 16
TOKEN_CACHE_SECONDS = "3600"  # the most serving allows: the run must not depend on the registry


# --- workloads --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    build: Callable[[], Any]


def linear() -> Any:
    from sklearn.linear_model import LinearRegression

    x, y = training_data()
    return LinearRegression().fit(x, y)


def forest() -> Any:
    from sklearn.ensemble import RandomForestRegressor

    x, y = training_data()
    return RandomForestRegressor(n_estimators=50, max_depth=8, random_state=0, n_jobs=1).fit(x, y)


def training_data() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5000, FEATURES))
    y = x @ rng.normal(size=FEATURES) + np.sin(x[:, 0] * 3) + rng.normal(scale=0.1, size=5000)
    return x, y


WORKLOADS = {
    "linear": Workload("linear", "LinearRegression, 10 features", linear),
    "forest": Workload("forest", "RandomForestRegressor, 50 trees, depth 8, 10 features", forest),
}


def rows(count: int) -> list[list[float]]:
    rng = np.random.default_rng(1)
    return [[round(float(v), 6) for v in row] for row in rng.normal(size=(count, FEATURES))]


# --- servers ----------------------------------------------------------------------------------


def flask_body(batch: list[list[float]]) -> bytes:
    # The tutorial's shape for one row; the 64-row requests need the list form.
    return json.dumps({"input": batch[0]} if len(batch) == 1 else {"inputs": batch}).encode()


@dataclass(frozen=True)
class BerthVariant:
    env: dict[str, str]
    workloads: tuple[str, ...]
    about: str


BERTH_VARIANTS = {
    "berth-nobatch": BerthVariant({"BERTH_BATCHING": "false"}, ("linear",), "micro-batching off"),
    "berth-batch": BerthVariant({"BERTH_BATCHING": "true"}, ("linear",), "micro-batching on"),
    "berth-sklearn": BerthVariant(
        {"BERTH_ONNX": "false", "BERTH_BATCHING": "false"},
        # On the linear model too: the same scikit-learn predict as the floor, so the ratio is
        # Berth's own overhead (with ONNX on, Berth also skips scikit-learn's input checks).
        ("linear", "forest"),
        "scikit-learn, micro-batching off",
    ),
    # What the 0.9x counts is "routing, version lookup, validation and metrics": these
    # two take away, in turn, the access log and per-request authentication, which the floor
    # does not do either, so the note can say what each costs (`--servers`, not by default).
    "berth-sklearn-nolog": BerthVariant(
        {"BERTH_ONNX": "false", "BERTH_BATCHING": "false", "BERTH_ACCESS_LOG": "false"},
        ("linear",),
        "scikit-learn, micro-batching off, access log off",
    ),
    "berth-sklearn-open": BerthVariant(
        {
            "BERTH_ONNX": "false",
            "BERTH_BATCHING": "false",
            "BERTH_ACCESS_LOG": "false",
            "BERTH_ANONYMOUS_PREDICT": "true",
        },
        ("linear",),
        "scikit-learn, micro-batching off, access log off, anonymous predict",
    ),
    "berth-sklearn-batch": BerthVariant(
        {"BERTH_ONNX": "false", "BERTH_BATCHING": "true"},
        ("forest",),
        "scikit-learn, micro-batching on",
    ),
    "berth-onnx": BerthVariant(
        {"BERTH_ONNX": "true", "BERTH_BATCHING": "false"},
        ("forest",),
        "onnxruntime, micro-batching off",
    ),
    "berth-onnx-batch": BerthVariant(
        {"BERTH_ONNX": "true", "BERTH_BATCHING": "true"},
        ("forest",),
        "onnxruntime, micro-batching on",
    ),
}
# Which Berth variant stands for "Berth" in the floor/Flask/peer ratios: the shipped defaults.
HEADLINE = {"linear": "berth-batch", "forest": "berth-onnx-batch"}
# `make bench`: each toggle against the shipped defaults (berth-onnx, ONNX without batching, on
# request: `--servers berth-onnx`).
DEFAULT_VARIANTS = (
    "berth-nobatch",
    "berth-batch",
    "berth-sklearn",
    "berth-sklearn-batch",
    "berth-onnx-batch",
)
BASE_SERVERS = ("floor", "flask")


class Bench:
    """One benchmark run: a scratch directory, the trained models, a registry with them pushed."""

    def __init__(self, workdir: Path, workloads: list[str]) -> None:
        self.workdir = workdir
        self.logs = workdir / "logs"
        self.logs.mkdir()
        self.models: dict[str, Path] = {}
        self.estimators: dict[str, Any] = {}
        for name in workloads:
            estimator = WORKLOADS[name].build()
            path = workdir / f"{name}.joblib"
            joblib.dump(estimator, path)
            self.models[name] = path
            self.estimators[name] = estimator
        self.registry_port = free_port()
        self.registry_env = registry_env(f"sqlite:///{workdir / 'berth.db'}", workdir)
        self.tokens: dict[str, str] = {}
        self.pushed = False
        self.serving_pid: int | None = None
        registry_cli(self.registry_env, "db", "upgrade")

    # -- the registry (setup only) --

    def token(self, name: str, role: str) -> str:
        if name not in self.tokens:
            self.tokens[name] = mint_token(self.registry_env, name, role)
        return self.tokens[name]

    @contextmanager
    def registry(self) -> Iterator[str]:
        """The registry on the load core, for setup: serving's snapshot and downloads."""
        process = registry_process(
            self.registry_env,
            self.logs / "registry.log",
            core=LOAD_CORE,
            port=self.registry_port,
        )
        process.start()
        try:
            if not self.pushed:
                self.push(process.url)
            yield process.url
        finally:
            process.stop()

    def push(self, url: str) -> None:
        """The product's way: `berth.Client.push` (which adds renditions), then promote."""
        import berth

        admin = self.token("bench-admin", "admin")
        sample = np.array(rows(5))
        with berth.Client(url, token=admin, timeout=120) as client:
            for name, estimator in self.estimators.items():
                version = client.push(estimator, MODEL_PREFIX + name, sample=sample)
                files = [f.name for f in getattr(version, "files", []) or []]
                print(f"  pushed {MODEL_PREFIX}{name} v{version.version} files={files}")
                client.promote(MODEL_PREFIX + name, version.version)
        self.pushed = True

    # -- the servers under measurement --

    @contextmanager
    def server(self, server: str, workload: str) -> Iterator[Endpoint]:
        if server == "floor":
            yield from self._floor(workload)
        elif server == "flask":
            yield from self._flask(workload)
        elif server in BERTH_VARIANTS:
            yield from self._berth(server, workload)
        elif server in PEERS:
            peer: PeerServer = PEERS[server]
            yield from peer.serve(self.models[workload], self.workdir, self.logs)
        else:
            raise ValueError(f"unknown server {server!r}")

    def _floor(self, workload: str) -> Iterator[Endpoint]:
        port = free_port()
        process = Process(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "bench.apps.starlette_floor:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            core=SERVER_CORE,
            env=os.environ | {"BENCH_MODEL_PATH": str(self.models[workload])},
            port=port,
            log_path=self.logs / f"floor-{workload}.log",
        )
        with process:
            self.serving_pid = process.pid  # profiled like Berth's (bench/profile_serving.py)
            yield Endpoint(process.url + "/predict", inputs_body)

    def _flask(self, workload: str) -> Iterator[Endpoint]:
        from peers import ensure_venv

        venv = ensure_venv("flask", ["flask", "gunicorn", "scikit-learn", "joblib", "numpy"])
        port = free_port()
        process = Process(
            [
                str(venv / "bin" / "gunicorn"),
                "-w",
                "1",
                "-k",
                "sync",
                "-b",
                f"127.0.0.1:{port}",
                "--log-level",
                "warning",
                "bench.apps.flask_app:app",
            ],
            core=SERVER_CORE,
            env=os.environ | {"BENCH_MODEL_PATH": str(self.models[workload])},
            port=port,
            log_path=self.logs / f"flask-{workload}.log",
        )
        with process:
            yield Endpoint(process.url + "/predict", flask_body)

    def _berth(self, variant: str, workload: str) -> Iterator[Endpoint]:
        reader = self.token("bench-caller", "reader")
        serving_token = self.token("bench-serving", "reader")
        env = (
            os.environ
            | {
                "BERTH_REGISTRY_URL": f"http://127.0.0.1:{self.registry_port}",
                "BERTH_REGISTRY_TOKEN": serving_token,
                "BERTH_TOKEN_CACHE_SECONDS": TOKEN_CACHE_SECONDS,
            }
            | BERTH_VARIANTS[variant].env
        )
        process = serving_process(env, self.logs / f"{variant}.log", core=SERVER_CORE)
        model = MODEL_PREFIX + workload
        url = f"{process.url}/models/{model}/predict"
        headers = {"Authorization": f"Bearer {reader}"}
        with self.registry():
            process.start(timeout=120)
            self.serving_pid = process.pid
            # Served (loaded, example replayed) and the caller's token vouched for, while the
            # registry is still up; then it goes away and serving answers alone.
            wait_until(
                f"{variant} serving {model}",
                lambda: (
                    httpx.post(
                        url, content=inputs_body(rows(1)), headers=headers, timeout=5
                    ).status_code
                    == 200
                ),
                timeout=120,
            )
        try:
            yield Endpoint(url, inputs_body, headers)
        finally:
            process.stop()


# --- the runs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    connections: int
    rows: int

    @property
    def key(self) -> str:
        return f"{self.rows}row-c{self.connections}"


def configs(connections: list[int]) -> list[Config]:
    return [Config(c, 1) for c in connections] + [Config(BATCH_CONNECTIONS, BATCH_ROWS)]


def check_answer(endpoint: Endpoint) -> None:
    response = httpx.post(
        endpoint.url,
        content=endpoint.body(rows(1)),
        headers={"Content-Type": "application/json", **endpoint.headers},
        timeout=10,
    )
    if response.status_code != 200:
        raise RuntimeError(f"{endpoint.url} answered {response.status_code}: {response.text}")


def measure(
    bench: Bench,
    servers: list[str],
    workload: str,
    args: argparse.Namespace,
    skipped: dict[str, str],
) -> dict[str, dict[str, Measurement]]:
    """Every server's figures for one workload, their runs interleaved.

    All the servers are up at once (each pinned to the server core, idle while another is under
    load), and each repeat runs them one after the other: on a shared machine whose speed drifts
    over minutes, the servers of one repeat meet the same machine, so their ratios hold even when
    the absolute figures do not.
    """
    with ExitStack() as stack:
        endpoints: dict[str, Endpoint] = {}
        for server in servers:
            try:
                endpoint = stack.enter_context(bench.server(server, workload))
                check_answer(endpoint)
            except Exception as exc:
                if server not in PEERS:
                    print_logs(bench.logs)
                    raise
                # A peer that cannot install or start here is reported, not fatal.
                skipped[server] = f"{type(exc).__name__}: {exc}"
                print_logs(bench.logs, f"{server}-*.log")
                print(f"  {server}: skipped ({skipped[server]})", flush=True)
                continue
            endpoints[server] = endpoint
        results: dict[str, dict[str, Measurement]] = {server: {} for server in endpoints}
        for config in configs(args.connections):
            scripts = {
                server: wrk_script(
                    endpoint.body(rows(config.rows)), endpoint.headers, bench.workdir
                )
                for server, endpoint in endpoints.items()
            }
            for server, endpoint in endpoints.items():
                # Warm-up: connections, caches, the allocator; not counted.
                wrk(
                    endpoint.url,
                    scripts[server],
                    connections=config.connections,
                    duration=args.warmup,
                )
                results[server][config.key] = Measurement()
            for _ in range(args.repeat):
                for server, endpoint in endpoints.items():
                    results[server][config.key].runs.append(
                        wrk(
                            endpoint.url,
                            scripts[server],
                            connections=config.connections,
                            duration=args.duration,
                        )
                    )
            for server in endpoints:
                m = results[server][config.key].median()
                print(
                    f"  {workload:7} {server:20} {config.key:12} {m['rps']:>9,.0f} req/s  "
                    f"p50 {m['p50_ms']:7.2f} ms  p99 {m['p99_ms']:7.2f} ms  "
                    f"errors {m['errors']}",
                    flush=True,
                )
    return results


Figure = tuple[str, str, str]
"""(workload, server, run key), e.g. `("linear", "floor", "1row-c16")`."""


# --- targets ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    name: str
    value: float
    goal: str
    ok: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "target": self.name,
            "value": round(self.value, 3),
            "goal": self.goal,
            "pass": self.ok,
        }


def targets(
    table: dict[str, dict[str, dict[str, dict[str, float]]]],
    runs: dict[str, dict[str, dict[str, dict[str, Any]]]] | None = None,
) -> list[Target]:
    """The issue's targets, from whichever figures this run has.

    A throughput ratio is the median of the per-repeat ratios when `runs` has the repeats
    (run i of one server beside run i of the other, seconds apart, on the same machine), else
    the ratio of the medians.
    """

    def get(workload: str, server: str, key: str) -> dict[str, float] | None:
        return table.get(workload, {}).get(server, {}).get(key)

    def repeats(workload: str, server: str, key: str) -> list[float]:
        found = (runs or {}).get(workload, {}).get(server, {}).get(key)
        return [r["requests"] / r["seconds"] for r in found["repeats"]] if found else []

    out: list[Target] = []

    def ratio(name: str, a: Figure, b: Figure, goal: float) -> None:
        first, second = get(*a), get(*b)
        if not (first and second and second["rps"]):
            return
        pairs = list(zip(repeats(*a), repeats(*b), strict=False))
        if (
            pairs
            and len(pairs) == len(repeats(*a)) == len(repeats(*b))
            and all(y for _, y in pairs)
        ):
            value = statistics.median(x / y for x, y in pairs)
        else:
            value = first["rps"] / second["rps"]
        out.append(Target(name, value, f">= {goal}x", value >= goal))

    lin, rf = HEADLINE["linear"], HEADLINE["forest"]
    c16, c64, c1 = "1row-c16", "1row-c64", "1row-c1"
    ratio(f"linear 16 conns: {lin} / floor", ("linear", lin, c16), ("linear", "floor", c16), 0.9)
    ratio(f"linear 16 conns: {lin} / flask", ("linear", lin, c16), ("linear", "flask", c16), 2.5)
    ratio(
        f"linear 16 conns: {lin} / mlserver",
        ("linear", lin, c16),
        ("linear", "mlserver", c16),
        2.5,
    )
    ratio(
        f"linear 16 conns: {lin} / mlflow",
        ("linear", lin, c16),
        ("linear", "mlflow", c16),
        4.0,
    )
    ratio(
        "linear 16 conns: berth-sklearn / floor (both scikit-learn)",
        ("linear", "berth-sklearn", c16),
        ("linear", "floor", c16),
        0.9,
    )
    for server in ("berth-sklearn-nolog", "berth-sklearn-open"):
        ratio(
            f"linear 16 conns: {server} / floor (the target's scope)",
            ("linear", server, c16),
            ("linear", "floor", c16),
            0.9,
        )
    for server in (lin, "berth-sklearn"):
        berth1, floor1 = get("linear", server, c1), get("linear", "floor", c1)
        if berth1 and floor1:
            extra = berth1["p50_ms"] - floor1["p50_ms"]
            out.append(
                Target(
                    f"linear 1 conn: {server} p50 - floor p50 (ms)",
                    extra,
                    "<= 0.3 ms",
                    extra <= 0.3,
                )
            )
    ratio(f"forest 16 conns: {rf} / flask", ("forest", rf, c16), ("forest", "flask", c16), 10.0)
    ratio(
        "forest 16 conns: berth-onnx / flask",
        ("forest", "berth-onnx", c16),
        ("forest", "flask", c16),
        10.0,
    )
    # The compiled path against scikit-learn, both batching as shipped: ONNX must pay its way.
    ratio(
        "forest 16 conns: ONNX on / off (batching on)",
        ("forest", "berth-onnx-batch", c16),
        ("forest", "berth-sklearn-batch", c16),
        1.0,
    )
    on, off = get("forest", "berth-sklearn-batch", c64), get("forest", "berth-sklearn", c64)
    ratio(
        "forest 64 conns (scikit-learn): batching on / off",
        ("forest", "berth-sklearn-batch", c64),
        ("forest", "berth-sklearn", c64),
        8.0,
    )
    if on and off:
        out.append(
            Target(
                "forest 64 conns (scikit-learn): p99 batching on / off",
                on["p99_ms"] / off["p99_ms"],
                "<= 1.0x",
                on["p99_ms"] <= off["p99_ms"],
            )
        )
    for workload, with_batch, without in (
        ("forest", "berth-sklearn-batch", "berth-sklearn"),
        ("linear", "berth-batch", "berth-nobatch"),
    ):
        a, b = get(workload, with_batch, c1), get(workload, without, c1)
        if a and b:
            # "No worse": within 5% or 0.05 ms, the noise of one run on a shared machine.
            ok = a["p50_ms"] <= max(b["p50_ms"] * 1.05, b["p50_ms"] + 0.05)
            out.append(
                Target(
                    f"{workload} 1 conn: p50 batching on / off",
                    a["p50_ms"] / b["p50_ms"],
                    "<= 1.0x (5% noise)",
                    ok,
                )
            )
    return out


# --- main -------------------------------------------------------------------------------------


def print_table(
    table: dict[str, dict[str, dict[str, dict[str, float]]]],
    flask: dict[str, dict[str, dict[str, float]]],
) -> None:
    print()
    print(
        f"{'workload':8} {'server':20} {'run':12} {'req/s':>9} {'x flask':>8} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'errors':>7}"
    )
    for workload, servers in table.items():
        for server, runs in servers.items():
            for key, m in runs.items():
                base = flask.get(workload, {}).get(key)
                x = f"{m['rps'] / base['rps']:.2f}" if base and base["rps"] else "-"
                print(
                    f"{workload:8} {server:20} {key:12} {m['rps']:>9,.0f} {x:>8} "
                    f"{m['p50_ms']:>8.2f} {m['p99_ms']:>8.2f} {m['errors']:>7}"
                )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per wrk run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of unmeasured load")
    parser.add_argument("--quick", action="store_true", help="smoke: 3 s runs, one repeat")
    parser.add_argument(
        "--workloads",
        nargs="+",
        default=None,
        choices=WORKLOADS,
        help="default: both; with --peers, linear (the issue's peer table)",
    )
    parser.add_argument(
        "--servers",
        nargs="+",
        default=None,
        help=f"of {', '.join([*BASE_SERVERS, *BERTH_VARIANTS, *PEERS])}",
    )
    parser.add_argument("--peers", action="store_true", help="add MLflow and MLServer")
    parser.add_argument("--connections", nargs="+", type=int, default=list(CONNECTIONS))
    parser.add_argument("--name", default="predict", help="results file prefix")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.repeat, args.warmup = 3.0, 1, 1.0
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install -y wrk)")
    if args.servers:
        servers = args.servers
    elif args.peers:
        # The peers beside the floor, Flask and Berth as shipped: the peer table.
        servers = [*BASE_SERVERS, *dict.fromkeys(HEADLINE.values()), *PEERS]
    else:
        servers = [*BASE_SERVERS, *DEFAULT_VARIANTS]
    workloads = args.workloads or (["linear"] if args.peers else list(WORKLOADS))
    args.workloads = workloads

    print(
        f"predict benchmark: {args.duration:g} s x {args.repeat} per figure, "
        f"servers {', '.join(servers)}",
        flush=True,
    )
    table: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    raw: dict[str, dict[str, dict[str, Any]]] = {}
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="berth-bench-") as scratch:
        bench = Bench(Path(scratch), args.workloads)
        for workload in args.workloads:
            chosen = [
                server
                for server in servers
                if server not in BERTH_VARIANTS or workload in BERTH_VARIANTS[server].workloads
            ]
            for server, results in measure(bench, chosen, workload, args, skipped).items():
                table.setdefault(workload, {})[server] = {k: m.median() for k, m in results.items()}
                raw.setdefault(workload, {})[server] = {k: m.as_json() for k, m in results.items()}
    flask = table_flask(table)
    print_table(table, flask)
    checks = targets(table, raw)
    print()
    for t in checks:
        print(f"{verdict(t.ok)}  {t.name}: {t.value:.2f} (target {t.goal})")
    result = {
        "benchmark": "predict",
        "at": now(),
        "duration_s": args.duration,
        "repeat": args.repeat,
        "summary": table,
        "targets": [t.as_json() for t in checks],
        "skipped": skipped,
        "runs": raw,
        "setup": {
            "workloads": {w: WORKLOADS[w].description for w in args.workloads},
            "servers": servers,
            "berth_variants": {
                k: {"env": v.env, "about": v.about} for k, v in BERTH_VARIANTS.items()
            },
            "headline": HEADLINE,
            "pinning": "each server taskset -c 0; wrk -t1 taskset -c 1",
            "berth": "python -m serving, auth on (reader token), registry stopped during load, "
            f"BERTH_TOKEN_CACHE_SECONDS={TOKEN_CACHE_SECONDS}, other settings default",
            "figures": "median over repeats of req/s, p50, p99 each; errors summed; all "
            "servers up at once, each repeat runs every server in turn",
            **machine(),
        },
    }
    path = write_results(args.name, result)
    print(f"\nresults: {path}")
    return 0


def table_flask(
    table: dict[str, dict[str, dict[str, dict[str, float]]]],
) -> dict[str, dict[str, dict[str, float]]]:
    return {w: servers["flask"] for w, servers in table.items() if "flask" in servers}


def print_logs(logs: Path, pattern: str = "*.log") -> None:
    for log in sorted(logs.glob(pattern)):
        tail = log.read_text(errors="replace").splitlines()[-20:]
        print(f"--- {log.name}", *tail, sep="\n", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
