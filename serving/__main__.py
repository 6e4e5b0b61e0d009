"""`python -m serving --host H --port P`: one serving replica under uvicorn."""

from __future__ import annotations

import argparse
import logging

import uvicorn

from serving.auth import InsecureBinding, check_binding
from serving.config import ServingSettings
from serving.main import create_app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m serving", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # httpx logs every request at INFO: a long-poll and a heartbeat every few seconds would
    # drown what serving itself says.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    settings = ServingSettings()
    try:
        check_binding(auth=settings.auth, allow_insecure=settings.allow_insecure, host=args.host)
    except InsecureBinding as exc:
        raise SystemExit(f"error: {exc}") from exc
    app = create_app(settings)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)


if __name__ == "__main__":
    main()
