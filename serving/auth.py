"""Who may call serving: bearer tokens the registry vouches for, remembered briefly.

Serving holds no database, so it asks the registry (`GET /api/v1/whoami` with the caller's own
token) and caches the answer per token digest for `ttl` seconds: a revoked token stops working
within that time. Refusals are cached for a few seconds too, so a flood of bad tokens does not
become a flood of registry calls. While the registry is unreachable, a token it vouched for in the
last `stale` seconds still works: serving keeps answering from what it has, as it does for models.

Every route declares its permission like the registry's do (`PERMISSION_ATTRIBUTE`), and a test
walks both apps' routes so none ships undeclared.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from fastapi import Request

from registry.schemas import Role, is_loopback
from serving.errors import Forbidden, RegistryUnavailable, Unauthenticated

PERMISSION_ATTRIBUTE = "__berth_permission__"
PUBLIC = "public"
F = TypeVar("F", bound=Callable[..., Any])


def declare(permission: str) -> Callable[[F], F]:
    """Mark an endpoint or dependency with the permission it enforces (for the route walk)."""

    def mark(func: F) -> F:
        setattr(func, PERMISSION_ATTRIBUTE, permission)
        return func

    return mark


@dataclass(frozen=True, slots=True)
class Caller:
    name: str
    role: Role
    models: frozenset[str] | None

    def may(self, role: Role, model: str | None) -> bool:
        if self.role.rank < role.rank:
            return False
        return self.models is None or model is None or model in self.models


ANONYMOUS = Caller(name="anonymous", role=Role.reader, models=None)


@dataclass(slots=True)
class _Entry:
    caller: Caller | None
    fresh_until: float
    usable_until: float


class RegistryTokens:
    """Bearer tokens checked against the registry, with a bounded TTL cache and single flight."""

    def __init__(
        self,
        api_url: str,
        *,
        timeout_seconds: float,
        ttl_seconds: float,
        stale_seconds: float = 300.0,
        refusal_seconds: float = 5.0,
        max_entries: int = 10_000,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=api_url.rstrip("/"),
            headers={"User-Agent": "berth-serving"},
            timeout=httpx.Timeout(timeout_seconds),
            transport=transport,
            follow_redirects=False,
        )
        self._ttl = ttl_seconds
        self._stale = stale_seconds
        self._refusal = refusal_seconds
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._in_flight: dict[bytes, asyncio.Future[Caller | None]] = {}

    async def aclose(self) -> None:
        await self._http.aclose()

    async def caller(self, authorization: str | None) -> Caller:
        """The caller a `Authorization` header names; `Unauthenticated` if none or not valid."""
        scheme, _, secret = (authorization or "").partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not secret:
            raise Unauthenticated("this endpoint needs a bearer token")
        if len(secret) > 512:
            raise Unauthenticated("the bearer token is not valid")
        key = hashlib.sha256(secret.encode()).digest()
        now = self._clock()
        entry = self._entries.get(key)
        if entry is not None and now < entry.fresh_until:
            self._entries.move_to_end(key)
            return self._verdict(entry.caller)
        pending = self._in_flight.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._ask(secret, key, entry))
            self._in_flight[key] = pending
            pending.add_done_callback(lambda _: self._in_flight.pop(key, None))
        return self._verdict(await asyncio.shield(pending))

    @staticmethod
    def _verdict(caller: Caller | None) -> Caller:
        if caller is None:
            raise Unauthenticated("the bearer token is not valid (or has been revoked)")
        return caller

    async def _ask(self, secret: str, key: bytes, entry: _Entry | None) -> Caller | None:
        try:
            response = await self._http.get(
                "/whoami", headers={"Authorization": f"Bearer {secret}"}
            )
        except httpx.HTTPError as exc:
            return self._stale_or_raise(entry, f"{type(exc).__name__}: {exc}")
        now = self._clock()
        if response.status_code == 401:
            self._remember(key, _Entry(None, now + self._refusal, now + self._refusal))
            return None
        if response.status_code != 200:
            return self._stale_or_raise(entry, f"whoami answered {response.status_code}")
        try:
            body = response.json()
            caller = Caller(
                name=str(body["name"]),
                role=Role(body["role"]),
                models=frozenset(body["models"]) if body.get("models") is not None else None,
            )
        except (ValueError, KeyError, TypeError) as exc:
            return self._stale_or_raise(entry, f"whoami answered something unusable: {exc}")
        self._remember(key, _Entry(caller, now + self._ttl, now + self._ttl + self._stale))
        return caller

    def _stale_or_raise(self, entry: _Entry | None, why: str) -> Caller | None:
        now = self._clock()
        if entry is not None and entry.caller is not None and now < entry.usable_until:
            # Ask again only after a pause: otherwise, with the registry down, every request
            # past the TTL would wait on its own failed /whoami before getting the stale answer.
            entry.fresh_until = min(now + self._refusal, entry.usable_until)
            return entry.caller
        raise RegistryUnavailable(f"cannot check the bearer token with the registry: {why}")

    def _remember(self, key: bytes, entry: _Entry) -> None:
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)


Authorize = Callable[[Request], Awaitable[None]]


def predict_guard(tokens: RegistryTokens | None, *, anonymous: bool) -> Authorize:
    """What a predict request must show: a reader token for the model, unless anonymous."""

    async def open_predict(request: Request) -> None:
        return None

    async def reader_predict(request: Request) -> None:
        assert tokens is not None
        caller = await tokens.caller(request.headers.get("authorization"))
        model = request.path_params.get("name")
        if not caller.may(Role.reader, model):
            raise Forbidden(
                f"token '{caller.name}' may not call model '{model}'",
                detail={"model": model},
            )

    return open_predict if anonymous or tokens is None else reader_predict


@declare(Role.reader.value)
async def require_reader(request: Request) -> None:
    """FastAPI dependency for the operations routes that show what a replica serves."""
    authorize: Authorize = request.app.state.authorize_reader
    await authorize(request)


def reader_guard(tokens: RegistryTokens | None) -> Authorize:
    async def open_reader(request: Request) -> None:
        return None

    async def check_reader(request: Request) -> None:
        assert tokens is not None
        await tokens.caller(request.headers.get("authorization"))

    return open_reader if tokens is None else check_reader


@declare(PUBLIC)
def public() -> None:
    """FastAPI dependency marking a route as deliberately open (health checks)."""


class InsecureBinding(RuntimeError):
    """Refusing to listen beyond loopback with authentication off."""


def check_binding(*, auth: bool, allow_insecure: bool, host: str) -> None:
    """Refuse to expose an unauthenticated replica beyond this machine unless told to."""
    if auth or allow_insecure or is_loopback(host):
        return
    raise InsecureBinding(
        f"refusing to listen on {host} with authentication off (BERTH_AUTH=false): anyone who "
        "can reach it could call every model. Turn authentication on, bind to 127.0.0.1, or set "
        "BERTH_ALLOW_INSECURE=true."
    )
