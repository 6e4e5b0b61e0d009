"""`python -m registry`: run the registry, apply migrations, collect garbage, bootstrap a token.

The `berth` CLI wraps the same functions; this entry point needs nothing but the package.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from registry import auth, migrate
from registry.config import RegistrySettings
from registry.db import Database
from registry.errors import RegistryError
from registry.main import (
    InsecureBinding,
    check_binding,
    check_schema,
    create_app,
    freeze_startup_heap,
)
from registry.schemas import Role, TokenCreate
from registry.service import collect_garbage
from registry.storage import open_store


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m registry", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the registry HTTP service")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    db = commands.add_parser("db", help="database schema")
    db.add_argument("action", choices=["upgrade", "downgrade", "current"])
    db.add_argument("revision", nargs="?", default=None)
    gc = commands.add_parser("gc", help="delete unreferenced artifacts after the grace period")
    gc.add_argument("--dry-run", action="store_true")
    token = commands.add_parser("token", help="create a token straight in the database")
    token.add_argument("--name", required=True)
    token.add_argument("--role", choices=[r.value for r in Role], default=Role.admin.value)
    token.add_argument("--model", action="append", dest="models")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = RegistrySettings()
    try:
        if args.command == "serve":
            return _serve(settings, args.host, args.port)
        database = Database(settings.effective_database_url, timeout=settings.db_timeout_seconds)
        if args.command == "db":
            if args.action == "upgrade":
                migrate.upgrade(database, args.revision or "head")
            elif args.action == "downgrade":
                migrate.downgrade(database, args.revision or "-1")
            print(migrate.current_revision(database) or "base")
        elif args.command == "gc":
            store = open_store(settings.effective_artifact_store)
            report = collect_garbage(
                database, store, grace_seconds=settings.gc_grace_seconds, dry_run=args.dry_run
            )
            print(report.model_dump_json())
        elif args.command == "token":
            request = TokenCreate(name=args.name, role=Role(args.role), models=args.models)
            with database.transaction() as session:
                row, secret = auth.create_token(session, request, created_by="cli:bootstrap")
                print(json.dumps({"id": row.id, "name": row.name, "token": secret}))
    except (RegistryError, InsecureBinding) as exc:
        print(f"error: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 1
    return 0


def _serve(settings: RegistrySettings, host: str, port: int) -> int:
    import uvicorn

    check_binding(settings, host)
    app = create_app(settings)
    if not settings.auto_migrate:
        # Here as well as at startup: raised inside the lifespan, uvicorn would print it as a
        # traceback; here it is one line (the lifespan's own check still guards other hosts).
        check_schema(app.state.db)
    freeze_startup_heap()
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="info",
        timeout_graceful_shutdown=5,
        proxy_headers=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
