"""Bearer-token authentication and role-based authorisation.

Every route declares what it needs with one of the `require(...)` dependencies below; a test walks
every route and fails when one declares nothing, so no route ships open by accident.
Tokens are random secrets; only their SHA-256 is stored (a hash of 256 random bits needs no salt
or slow KDF: there is nothing to guess).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from registry import repository as repo
from registry.db import Database
from registry.errors import Forbidden, TokenNotFound, Unauthenticated
from registry.models import Token, utcnow
from registry.schemas import Role, TokenCreate

TOKEN_PREFIX = "berth_"  # noqa: S105 - a prefix that makes leaked tokens greppable
PUBLIC = "public"
PERMISSION_ATTRIBUTE = "__berth_permission__"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, as far as authorisation is concerned."""

    name: str
    role: Role
    token_id: int | None = None
    models: frozenset[str] | None = None

    @property
    def actor(self) -> str:
        """How the audit trail names this caller."""
        return f"token:{self.token_id}:{self.name}" if self.token_id is not None else self.name

    def sees(self, model: str) -> bool:
        """The token's scope includes `model`; an unscoped token sees every model."""
        return self.models is None or model in self.models


ANONYMOUS_LOCAL = Principal(name="local", role=Role.admin)
"""Whoever calls when authentication is off (allowed on loopback only, or when told)."""


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def create_token(session: Session, request: TokenCreate, *, created_by: str) -> tuple[Token, str]:
    """Create a token; returns the row and the secret, which is never stored or shown again."""
    secret = new_secret()
    token = repo.add_token(
        session,
        Token(
            name=request.name,
            secret_hash=hash_secret(secret),
            role=request.role.value,
            models=sorted(set(request.models)) if request.models is not None else None,
            created_by=created_by,
            created_at=utcnow(),
        ),
    )
    repo.add_audit(
        session,
        actor=created_by,
        action="token.create",
        detail={"token_id": token.id, "name": token.name, "role": token.role},
    )
    return token, secret


def revoke_token(session: Session, token_id: int, *, actor: str) -> Token:
    token = repo.get_token(session, token_id)
    if token is None:
        raise TokenNotFound(f"token {token_id} does not exist", detail={"token_id": token_id})
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        repo.add_audit(session, actor=actor, action="token.revoke", detail={"token_id": token_id})
    session.flush()
    return token


def list_tokens(session: Session) -> Sequence[Token]:
    return repo.list_tokens(session)


def bootstrap_admin_token(database: Database, path: Path) -> str | None:
    """On a first start, create an admin token and write it to `path` with mode 0600.

    Returns the secret, or None when the database already holds tokens (nothing is written then:
    an existing installation is never given a new admin by accident). The file is created with
    0600 from the start, never widened and narrowed afterwards.
    """
    with database.transaction() as session:
        if repo.count_tokens(session) > 0:
            return None
        _, secret = create_token(
            session, TokenCreate(name="admin", role=Role.admin), created_by="bootstrap"
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secret + "\n")
        os.chmod(path, 0o600)  # O_CREAT's mode is ignored for an existing file
    return secret


_LAST_USED_RESOLUTION = timedelta(minutes=1)


class TokenCache:
    """Principals by secret hash, each trusted for `ttl_seconds`; at most `size`, LRU.

    Every request authenticates, and without this each one took a database connection of its
    own before doing anything else: a promotion that wakes every serving replica at once became
    a burst of connections as large as the fleet. Only successes are kept (a refused secret is
    asked again), and revoking a token through this process clears the cache at once; a token
    revoked elsewhere (another registry process, `berth token revoke --database`) keeps working
    here for at most the TTL. When an entry runs out, every request that carries the token at
    that moment shares one database read (`resolve`), as a fleet of replicas sharing one token
    would otherwise all miss at once.
    """

    def __init__(
        self, ttl_seconds: float, *, size: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl = ttl_seconds
        self._size = size
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[float, Principal]] = OrderedDict()
        self._reading: dict[str, _Read] = {}

    def resolve(self, digest: str, read: Callable[[], Principal]) -> Principal:
        """The cached principal, or `read()`'s, shared by every caller missing it meanwhile."""
        if (known := self.get(digest)) is not None:
            return known
        with self._lock:
            pending = self._reading.get(digest)
            leader = pending is None
            if pending is None:
                pending = self._reading[digest] = _Read()
        if not leader:
            pending.done.wait()
            if pending.error is not None:
                raise pending.error
            assert pending.principal is not None
            return pending.principal
        try:
            pending.principal = read()
        except BaseException as exc:
            pending.error = exc
            raise
        finally:
            with self._lock:
                del self._reading[digest]
            pending.done.set()
        self.put(digest, pending.principal)
        return pending.principal

    def get(self, digest: str) -> Principal | None:
        with self._lock:
            found = self._entries.get(digest)
            if found is None:
                return None
            if self._clock() >= found[0]:
                del self._entries[digest]
                return None
            self._entries.move_to_end(digest)
            return found[1]

    def put(self, digest: str, principal: Principal) -> None:
        if self._ttl <= 0:
            return
        with self._lock:
            self._entries[digest] = (self._clock() + self._ttl, principal)
            self._entries.move_to_end(digest)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


@dataclass(slots=True)
class _Read:
    done: threading.Event = field(default_factory=threading.Event)
    principal: Principal | None = None
    error: BaseException | None = None


def authenticate(database: Database, secret: str, cache: TokenCache | None = None) -> Principal:
    """Resolve a bearer secret to its principal, or raise `Unauthenticated`."""
    digest = hash_secret(secret)
    if cache is None:
        return _principal_of(database, digest)
    return cache.resolve(digest, lambda: _principal_of(database, digest))


def _principal_of(database: Database, digest: str) -> Principal:
    with database.transaction(write=False) as session:
        token = repo.token_by_hash(session, digest)
    # compare_digest keeps the final check constant-time even though the lookup is by hash.
    if token is None or not hmac.compare_digest(token.secret_hash, digest):
        raise Unauthenticated("the bearer token is not valid")
    if token.revoked_at is not None:
        raise Unauthenticated("the bearer token has been revoked")
    now = utcnow()
    if token.last_used_at is None or now - token.last_used_at > _LAST_USED_RESOLUTION:
        with database.transaction() as session:
            repo.touch_token(session, token.id, now)
    return Principal(
        name=token.name,
        role=Role(token.role),
        token_id=token.id,
        models=frozenset(token.models) if token.models is not None else None,
    )


_bearer = HTTPBearer(auto_error=False, description="A Berth token: `berth token create`.")


def authorize(
    principal: Principal, role: Role, *, model: str | None = None, unscoped: bool = False
) -> None:
    """Return only if `principal` holds `role`, for `model` when one is named, and, with
    `unscoped`, over every model; raise `Forbidden` otherwise.

    `unscoped` is for what acts on the whole installation (tokens, gc): a token scoped to some
    models must not mint an unscoped token or touch what every model shares.
    """
    needs = f"it needs {role.value}"
    if principal.role.rank < role.rank:
        raise Forbidden(
            f"token '{principal.name}' ({principal.role.value}) may not do this; {needs}",
            detail={"required_role": role.value},
        )
    if model is not None and not principal.sees(model):
        raise Forbidden(
            f"token '{principal.name}' ({principal.role.value}) may not do this for model "
            f"'{model}'; {needs}",
            detail={"required_role": role.value, "model": model},
        )
    if unscoped and principal.models is not None:
        raise Forbidden(
            f"token '{principal.name}' is scoped to models; this needs a {role.value} token "
            "scoped to none",
            detail={"required_role": role.value, "unscoped": True},
        )


def require(role: Role, *, unscoped: bool = False) -> Callable[..., Principal]:
    """A dependency that admits callers holding `role` (or better) for the model in the path.

    Routes without a model in the path apply the token's scope themselves: they list only what
    the scope includes, or check a model named in the body or query with `authorize`.
    """

    def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        state: Any = request.app.state
        if not state.settings.auth:
            return ANONYMOUS_LOCAL
        if credentials is None:
            raise Unauthenticated("this endpoint needs a bearer token")
        principal = authenticate(state.db, credentials.credentials, state.token_cache)
        authorize(principal, role, model=request.path_params.get("name"), unscoped=unscoped)
        return principal

    setattr(dependency, PERMISSION_ATTRIBUTE, role.value)
    return dependency


def public() -> Callable[[], None]:
    """A dependency that marks a route as deliberately open (health checks)."""

    def dependency() -> None:
        return None

    setattr(dependency, PERMISSION_ATTRIBUTE, PUBLIC)
    return dependency


Reader = Annotated[Principal, Depends(require(Role.reader))]
Publisher = Annotated[Principal, Depends(require(Role.publisher))]
Admin = Annotated[Principal, Depends(require(Role.admin))]
RegistryAdmin = Annotated[Principal, Depends(require(Role.admin, unscoped=True))]
"""An admin over the whole installation: tokens and gc, which no model scope can contain."""
Public = Depends(public())
