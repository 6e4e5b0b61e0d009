"""`berth up`: the registry and one serving replica as one ASGI app on one port.

Each service stays exactly the app it is in production (its own state, error handlers,
middleware and lifespan); this module only decides which app a request goes to and runs both
lifespans. Serving talks to the registry over HTTP at this process's own address, as it would
across a network: the socket is bound before either lifespan starts, so serving's first request
waits in the listen backlog instead of being refused, and its feed follower retries with backoff
whatever happens.
"""

from __future__ import annotations

import asyncio
import copy
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from berth.tokens import bootstrap
from registry import migrate
from registry.config import RegistrySettings
from registry.db import Database, ensure_directory
from registry.main import VERSION
from registry.main import create_app as create_registry_app
from registry.schemas import Health
from serving.config import ServingSettings
from serving.main import create_app as create_serving_app

FRONT_PATHS = frozenset(
    {"/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
)
"""Paths both services answer; the all-in-one answers them itself, for both."""


class StartupFailed(RuntimeError):
    pass


class Lifespan:
    """Drives one ASGI app's lifespan protocol from outside: `startup()`, later `shutdown()`.

    Speaking the protocol rather than entering the app's lifespan context keeps whatever the
    framework wraps around it (FastAPI's telemetry setup, lifespan state) working unchanged.
    """

    def __init__(self, app: ASGIApp, name: str) -> None:
        self._app = app
        self._name = name
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._outbox: asyncio.Queue[Message] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        await self._app(scope, self._inbox.get, self._outbox.put)

    async def _reply(self) -> Message:
        assert self._task is not None
        answer = asyncio.ensure_future(self._outbox.get())
        done, _ = await asyncio.wait({answer, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if answer in done:
            return answer.result()
        answer.cancel()
        error = self._task.exception()
        return {"type": "failed", "message": repr(error) if error else "lifespan ended early"}

    async def startup(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"{self._name} lifespan")
        await self._inbox.put({"type": "lifespan.startup"})
        message = await self._reply()
        if message["type"] != "lifespan.startup.complete":
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
            raise StartupFailed(f"the {self._name} failed to start: {message.get('message', '')}")

    async def shutdown(self) -> None:
        if self._task is None:
            return
        await self._inbox.put({"type": "lifespan.shutdown"})
        await self._reply()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None


class AllInOne:
    """One ASGI app in front of the registry and serving apps."""

    def __init__(self, registry: FastAPI, serving: FastAPI) -> None:
        self.registry = registry
        self.serving = serving
        self.front = _front(self)
        # Predict is the hot path: serving's routes are tried first, and they are few.
        self._serving_routes: list[BaseRoute] = [
            r for r in serving.router.routes if getattr(r, "path", None) not in FRONT_PATHS
        ]
        self._lifespans = [Lifespan(registry, "registry"), Lifespan(serving, "serving")]

    def route(self, scope: Scope) -> ASGIApp:
        """The app that answers this request."""
        if scope["path"] in FRONT_PATHS:
            return self.front
        for route in self._serving_routes:
            match, _ = route.matches(scope)
            if match is not Match.NONE:
                return self.serving
        return self.registry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        await self.route(scope)(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        await receive()
        started: list[Lifespan] = []
        try:
            for lifespan in self._lifespans:
                await lifespan.startup()
                started.append(lifespan)
        except StartupFailed as exc:
            for lifespan in reversed(started):
                await lifespan.shutdown()
            await send({"type": "lifespan.startup.failed", "message": str(exc)})
            return
        await send({"type": "lifespan.startup.complete"})
        await receive()
        # Serving first: it is a client of the registry, not the other way round.
        for lifespan in reversed(started):
            await lifespan.shutdown()
        await send({"type": "lifespan.shutdown.complete"})

    async def stop_serving(self) -> None:
        """Stop serving's feed and heartbeats ahead of the rest, so that a shutdown does not
        wait on (or log failures of) serving's calls to a registry that is going away."""
        await self._lifespans[-1].shutdown()

    def openapi(self) -> dict[str, Any]:
        """The registry's schema with serving's paths added: one reference at `/docs`."""
        schema = copy.deepcopy(self.registry.openapi())
        schema["info"] = {
            "title": "Berth",
            "version": VERSION,
            "description": "The registry (`/api/v1`) and serving (`/models/.../predict`) of a "
            "`berth up` instance.",
        }
        served = self.serving.openapi()
        paths = schema.setdefault("paths", {})
        for path, item in served.get("paths", {}).items():
            paths.setdefault(path, item)
        components = schema.setdefault("components", {})
        for kind, entries in served.get("components", {}).items():
            for key, value in entries.items():
                components.setdefault(kind, {}).setdefault(key, value)
        return schema


async def _ask(app: ASGIApp, path: str) -> tuple[int, Any]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://berth") as client:
        response = await client.get(path)
    try:
        return response.status_code, response.json()
    except ValueError:
        return response.status_code, None


def _front(allinone: AllInOne) -> FastAPI:
    front = FastAPI(title="Berth", version=VERSION)

    @front.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """Alive: the process answers."""
        return {"status": "ok"}

    @front.get("/readyz", tags=["health"], responses={503: {"model": Health}})
    async def readyz(response: Response) -> Health:
        """Ready: the registry reaches its database and store, and serving is ready."""
        status, body = await _ask(allinone.registry, "/readyz")
        checks: dict[str, str] = dict(body.get("checks", {})) if isinstance(body, dict) else {}
        if not checks:
            checks["registry"] = "ok" if status == 200 else f"HTTP {status}"
        status, body = await _ask(allinone.serving, "/readyz")
        reason = body.get("message") if isinstance(body, dict) else None
        checks["serving"] = "ok" if status == 200 else str(reason or f"HTTP {status}")
        healthy = all(value == "ok" for value in checks.values())
        if not healthy:
            response.status_code = 503
        return Health(status="ok" if healthy else "degraded", checks=checks)

    front.openapi = allinone.openapi  # type: ignore[method-assign]
    return front


# --- the instance `berth up` runs ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Instance:
    app: AllInOne
    url: str
    socket: socket.socket
    admin_token: Path | None
    admin_created: bool


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, bound now so that the process can call itself before it serves."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def self_url(sock: socket.socket) -> str:
    """How this process reaches its own socket: loopback when bound to every address."""
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", ""):  # noqa: S104 - reading the bound address, not choosing one
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


IN_PROCESS_FEED_WAIT = 2.0
"""Serving's feed long-poll in `berth up`. A change wakes it at once whatever the wait (the
registry is in the same process); a short wait lets a stop finish within uvicorn's grace period
instead of cancelling a long-poll mid-flight."""


def build(
    settings: RegistrySettings,
    sock: socket.socket,
    *,
    serving_overrides: Mapping[str, Any] | None = None,
) -> Instance:
    """Migrate, provision tokens, and compose the two apps for the bound socket.

    Serving reads its own `BERTH_*` variables; `serving_overrides` wins over them, and the
    registry's address and token always come from here.
    """
    url = self_url(sock)
    ensure_directory(settings.data_dir, purpose="the data directory")
    database = Database(settings.effective_database_url, timeout=settings.db_timeout_seconds)
    if settings.auto_migrate:
        migrate.upgrade(database)
    admin_path: Path | None = None
    created = False
    overrides: dict[str, Any] = {**(serving_overrides or {}), "registry_url": url}
    if settings.auth:
        tokens = bootstrap(database, settings.data_dir)
        admin_path, created = tokens.admin_path, tokens.admin_created
        overrides["registry_token"] = tokens.serving_token
    registry = create_registry_app(settings, database=database)
    serving = create_serving_app(ServingSettings(**overrides))
    return Instance(
        app=AllInOne(registry, serving),
        url=url,
        socket=sock,
        admin_token=admin_path,
        admin_created=created,
    )
