"""`python -m serving --host H --port P [--workers N]`: a serving replica under uvicorn."""

from __future__ import annotations

import argparse
import contextlib
import gc
import math
import os
import socket
import tempfile
from collections.abc import Iterator

import uvicorn

from serving.auth import InsecureBinding, check_binding
from serving.config import ServingSettings
from serving.main import create_app
from serving.observability import configure_logging
from serving.shutdown import DrainingServer


@contextlib.contextmanager
def shared_metrics_dir() -> Iterator[None]:
    """Workers sum their metrics through files in `PROMETHEUS_MULTIPROC_DIR`.

    An operator's own directory is used as it is (wipe it between runs, as prometheus_client
    asks); without one, a fresh directory lives as long as this process.
    """
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        yield
        return
    with tempfile.TemporaryDirectory(prefix="berth-metrics-") as path:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
        try:
            yield
        finally:
            del os.environ["PROMETHEUS_MULTIPROC_DIR"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m serving", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--log-level", default=None, help="Overrides BERTH_LOG_LEVEL.")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="Worker processes, each a replica of its own; /metrics sums over them. With more "
        "than one, SIGTERM stops at once (no BERTH_SHUTDOWN_DELAY_SECONDS): uvicorn's "
        "supervisor owns the signals.",
    )
    args = parser.parse_args(argv)
    if args.log_level:
        # Through the environment, so worker processes read the same setting.
        os.environ["BERTH_LOG_LEVEL"] = args.log_level.lower()
    settings = ServingSettings()
    try:
        settings.bearer_token()  # an unreadable token file stops here, with its reason
        check_binding(auth=settings.auth, allow_insecure=settings.allow_insecure, host=args.host)
    except (InsecureBinding, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from exc
    configure_logging(
        level=settings.log_level,
        json_lines=settings.log_format == "json",
        access_log=settings.access_log,
    )
    if args.workers > 1:
        with shared_metrics_dir():
            uvicorn.run(
                "serving.main:app_from_environment",
                factory=True,
                workers=args.workers,
                host=args.host,
                port=args.port,
                log_level=settings.log_level,
                access_log=False,
                log_config=None,
            )
        return
    serve(settings, host=args.host, port=args.port)


def serve(
    settings: ServingSettings, *, host: str, port: int, sockets: list[socket.socket] | None = None
) -> None:
    """One replica in this process, with the graceful shutdown of `serving.shutdown`; on
    `sockets` (already bound, for `host`:`port`) when given."""
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=settings.log_level,
        access_log=False,
        # None: uvicorn's own loggers go through the handler configure_logging installed.
        log_config=None,
        timeout_graceful_shutdown=max(1, math.ceil(settings.shutdown_drain_seconds)),
    )
    server = DrainingServer(
        config,
        delay_seconds=settings.shutdown_delay_seconds,
        on_drain=app.state.runtime.begin_drain,
    )
    # The startup heap (numpy, scikit-learn, the app) is never garbage; frozen, the collector's
    # full passes skip it instead of pausing predicts to walk it (registry.main says more).
    gc.collect()
    gc.freeze()
    server.run(sockets=sockets)
    if not server.started:
        raise SystemExit(3)  # what uvicorn.run exits with when startup fails


if __name__ == "__main__":
    main()
