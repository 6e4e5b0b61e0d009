"""Benchmark: what each protocol and each piece of observability costs per predict request.

Calls the serving ASGI app in a tight loop in one process (no sockets, no HTTP parsing: only what
Berth's own code and its middleware add), one-row requests to a linear model that predicts on the
event loop, against the in-memory fake registry. Each variant is its own app; rounds interleave
the variants so that a noisy neighbour on a shared machine hits them all alike. Each figure is
the mean per-request time of a round: the median over rounds, and the best round.

Variants (`--variants`, default all that the installed code supports):
  floor         bench/apps/starlette_floor.py on the same model and body: the stack's ceiling
  bare          request-id middleware removed, access log off, tracing off
  request-id    + the X-Request-Id middleware (always on in serving)
  access-log    + one JSON log line per predict, formatted and written to /dev/null
  tracing       + OpenTelemetry: FastAPI's server span and berth.route / berth.predict spans,
                  always sampled, batched to an exporter that drops them
  v2-json, v2-binary, kserve-v1, mlflow
                the other protocols' inference routes (request-id on, log off, tracing off)

Multiprocess metrics: run again with PROMETHEUS_MULTIPROC_DIR set (an empty directory) and
compare `request-id` across the two runs.

    .venv/bin/python bench/predict_overhead.py --requests 4000 --rounds 7
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import logging
import os
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

# Appended, not prepended: PYTHONPATH may point `serving` at another tree (main's, to compare).
sys.path.append(str(Path(__file__).resolve().parents[1]))

from serving.main import create_app
from tests.serving.conftest import serving_settings
from tests.serving.factories import artifact, metadata, regressor
from tests.serving.fakes import FakeRegistry

ROW = [0.5, 1.5, -2.0]

Body = tuple[str, bytes, list[tuple[bytes, bytes]]]


def bodies() -> dict[str, Body]:
    v2 = {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP64", "data": ROW}]}
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [1, 3],
                    "datatype": "FP64",
                    "parameters": {"binary_data_size": 24},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    json_type = [(b"content-type", b"application/json")]
    return {
        "berth": ("/models/churn/predict", json.dumps({"inputs": [ROW]}).encode(), json_type),
        "v2-json": ("/v2/models/churn/infer", json.dumps(v2).encode(), json_type),
        "v2-binary": (
            "/v2/models/churn/infer",
            header + struct.pack("<3d", *ROW),
            [
                (b"content-type", b"application/octet-stream"),
                (b"inference-header-content-length", str(len(header)).encode()),
            ],
        ),
        "kserve-v1": (
            "/v1/models/churn:predict",
            json.dumps({"instances": [ROW]}).encode(),
            json_type,
        ),
        "mlflow": ("/invocations", json.dumps({"instances": [ROW]}).encode(), json_type),
    }


def scope_for(path: str, body: bytes, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"bench"),
            (b"content-length", str(len(body)).encode()),
            *headers,
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8001),
        "state": {},
    }


class DropExporter:
    """A span exporter that keeps nothing: the SDK's work without any export cost."""

    def export(self, spans: Any) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def floor_app(estimator: Any, workdir: Path) -> Any:
    # The module loads its model when imported, from the path the benchmark gives it.
    path = workdir / "floor.joblib"
    path.write_bytes(artifact(estimator))
    os.environ["BENCH_MODEL_PATH"] = str(path)
    from bench.apps.starlette_floor import app

    return app


def build(variant: str, fake: FakeRegistry) -> Any:
    options: dict[str, Any] = {}
    if variant == "tracing":
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(DropExporter()))  # type: ignore[arg-type]
        options["tracer_provider"] = provider
    app = create_app(
        serving_settings(
            default_model="churn",
            feed_wait_seconds=30,
            heartbeat_seconds=30,
            # Like for like with the floor: the same scikit-learn predict, one call per request.
            batching=False,
            onnx=False,
        ),
        transport=httpx.ASGITransport(fake.app),
        **options,
    )
    if variant == "bare":
        # Built lazily on the first call, so the middleware can still be taken out.
        app.user_middleware = [
            m for m in app.user_middleware if m.cls.__name__ != "RequestIdMiddleware"
        ]
    return app


@contextlib.asynccontextmanager
async def running(app: Any) -> AsyncIterator[None]:
    if not hasattr(app.state, "runtime"):  # the floor: nothing to start
        yield
        return
    async with app.router.lifespan_context(app):
        deadline = time.monotonic() + 60
        while not app.state.runtime.readiness()[0] or not app.state.runtime.router.table:
            if time.monotonic() > deadline:
                raise TimeoutError("serving did not become ready")
            await asyncio.sleep(0.05)
        yield


async def loop(app: Any, body: Body, n: int) -> float:
    path, content, headers = body
    scope = scope_for(path, content, headers)
    message = {"type": "http.request", "body": content, "more_body": False}
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return message

    async def send(event: dict[str, Any]) -> None:
        if event["type"] == "http.response.start":
            statuses.append(event["status"])

    started = time.perf_counter()
    for _ in range(n):
        await app(dict(scope), receive, send)
    elapsed = time.perf_counter() - started
    assert set(statuses) == {200}, statuses[:5]
    return elapsed / n


def access_log(on: bool) -> None:
    log = logging.getLogger("serving.access")
    for handler in list(log.handlers):
        log.removeHandler(handler)
    log.propagate = False
    if on:
        from serving.observability import JsonLinesHandler

        # What configure_logging sets up for BERTH_LOG_FORMAT=json, writing to /dev/null.
        log.addHandler(JsonLinesHandler(open(os.devnull, "w")))  # noqa: SIM115
        logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
        log.setLevel(logging.INFO)
    else:
        log.setLevel(logging.WARNING)


async def main(args: argparse.Namespace) -> None:
    fake = FakeRegistry()
    estimator = regressor(offset=1)
    fake.add_version("churn", artifact(estimator), metadata(estimator))
    fake.set_alias("churn", "production", 1)
    protocol_bodies = bodies()
    protocol_bodies["floor"] = ("/predict", *protocol_bodies["berth"][1:])
    variants: list[tuple[str, str]] = []
    for name in args.variants:
        variants.append((name, name if name in protocol_bodies else "berth"))
    scratch = Path(tempfile.mkdtemp(prefix="berth-overhead-"))
    apps = {
        name: floor_app(estimator, scratch) if name == "floor" else build(name, fake)
        for name, _ in variants
    }
    results: dict[str, list[float]] = {name: [] for name, _ in variants}
    async with contextlib.AsyncExitStack() as stack:
        for app in apps.values():
            await stack.enter_async_context(running(app))
        for name, body in variants:  # warm-up: caches, endpoints, first allocations
            access_log(name == "access-log")
            await loop(apps[name], protocol_bodies[body], 500)
        for _ in range(args.rounds):
            for name, body in variants:
                access_log(name == "access-log")
                results[name].append(await loop(apps[name], protocol_bodies[body], args.requests))
    import serving

    report = {
        "serving": str(Path(serving.__file__).parent),
        "multiprocess_metrics": bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR")),
        "requests_per_round": args.requests,
        "rounds": args.rounds,
        "us_per_request_median": {
            name: round(statistics.median(times) * 1e6, 1) for name, times in results.items()
        },
        # The least disturbed round: on a shared machine the closest to the code's own cost.
        "us_per_request_best": {
            name: round(min(times) * 1e6, 1) for name, times in results.items()
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--variants",
        nargs="+",
        default=[
            "floor",
            "bare",
            "request-id",
            "access-log",
            "tracing",
            "v2-json",
            "v2-binary",
            "kserve-v1",
            "mlflow",
        ],
    )
    logging.basicConfig(level=logging.WARNING, stream=io.StringIO())
    asyncio.run(main(parser.parse_args()))
