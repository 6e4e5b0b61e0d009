"""HTTP routes of the registry. Handlers parse, call one service method, and return a schema."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import asynccontextmanager
from datetime import timedelta
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import FileResponse, RedirectResponse, StreamingResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from registry import __version__, artifact_checks, auth, presenters
from registry import repository as repo
from registry.auth import Admin, Public, Publisher, Reader, RegistryAdmin
from registry.config import RegistrySettings
from registry.db import Database
from registry.errors import BadRequest, FileNotFound, InvalidCursor, Unavailable
from registry.feed import SharedReads
from registry.models import utcnow
from registry.schemas import (
    FILE_NAME_PATTERN,
    NAME_PATTERN,
    PRIMARY_FILE,
    AliasOut,
    AliasRevisionOut,
    AliasUpdate,
    AuditEventOut,
    ChangesOut,
    FileOut,
    GcReport,
    Health,
    ModelCreate,
    ModelOut,
    ModelPatch,
    Page,
    ReplicaOut,
    ReplicaReport,
    Role,
    RollbackRequest,
    Rollout,
    RoutingSnapshot,
    TokenCreate,
    TokenCreated,
    TokenOut,
    VersionOut,
    VersionPatch,
    VersionStatus,
)
from registry.service import RegistryService, collect_garbage
from registry.storage import ArtifactStore
from registry.uploads import UploadReceiver

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


# --- dependencies ---------------------------------------------------------------------------


def _session(request: Request) -> Iterator[Session]:
    state = request.app.state
    with state.db.transaction(write=request.method not in SAFE_METHODS) as session:
        session.info["after_commit"].append(lambda: _wake_waiters(state, session))
        yield session


def _wake_waiters(state: Any, session: Session) -> None:
    if (position := session.info.get("feed_position")) is not None:
        state.feed_signal.advance(position)
    if session.info.get("replica_reported"):
        state.replica_signal.pulse()


# scope="function": the transaction commits before the response is sent, so a client that got
# 201 can read what it wrote, and a failed commit becomes an error response, not a lie.
SessionDep = Annotated[Session, Depends(_session, scope="function")]


def _replica_session(request: Request) -> Iterator[Session]:
    # Replicas report together: each swaps at the same promotion and says so at once. Each
    # report is one short upsert; queued behind one lock per process they share a single pooled
    # connection, where in parallel they were a burst of connections as large as the fleet.
    with request.app.state.replica_writes:
        yield from _session(request)


ReplicaSessionDep = Annotated[Session, Depends(_replica_session, scope="function")]


def _settings(request: Request) -> RegistrySettings:
    settings: RegistrySettings = request.app.state.settings
    return settings


def _store(request: Request) -> ArtifactStore:
    store: ArtifactStore = request.app.state.store
    return store


def _database(request: Request) -> Database:
    database: Database = request.app.state.db
    return database


SettingsDep = Annotated[RegistrySettings, Depends(_settings)]
StoreDep = Annotated[ArtifactStore, Depends(_store)]
DatabaseDep = Annotated[Database, Depends(_database)]

ModelName = Annotated[str, Path(pattern=NAME_PATTERN, description="Model name.")]
AliasName = Annotated[str, Path(pattern=NAME_PATTERN, description="Alias name.")]
VersionNumber = Annotated[int, Path(ge=1, le=2**31 - 1, description="Version number.")]
FileName = Annotated[str, Path(pattern=FILE_NAME_PATTERN, description="File (part) name.")]
ReplicaId = Annotated[
    str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$", description="Replica id.")
]
Limit = Annotated[int, Query(ge=1, le=1000, description="Page size.")]
Cursor = Annotated[str | None, Query(max_length=512, description="`next_cursor` of a page.")]


def _if_match(if_match: Annotated[str | None, Header(max_length=64)] = None) -> int | None:
    """`If-Match: <revision>` (quoted or not) → the revision the caller expects, or None."""
    if if_match is None:
        return None
    value = if_match.strip().removeprefix("W/").strip('"')
    if not value.isdigit():
        raise BadRequest(f"If-Match must be an alias revision number, not {if_match[:64]!r}")
    return int(value)


IfMatch = Annotated[int | None, Depends(_if_match)]


@asynccontextmanager
async def _disconnect_watch(request: Request) -> AsyncIterator[asyncio.Event]:
    """An event set when the client hangs up, so a long-poll stops waiting for nobody."""
    gone = asyncio.Event()

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        gone.set()

    task = asyncio.create_task(watch())
    try:
        yield gone
    finally:
        task.cancel()


async def _first(*waits: Coroutine[Any, Any, Any]) -> None:
    """Wait until the first of `waits` finishes; cancel the rest."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


def _etag(response: Response, revision: int) -> None:
    response.headers["ETag"] = f'"{revision}"'


router = APIRouter(prefix="/api/v1")

# --- models ---------------------------------------------------------------------------------


@router.post("/models", status_code=201, tags=["models"])
def create_model(body: ModelCreate, session: SessionDep, principal: Publisher) -> ModelOut:
    """Create a model explicitly (uploading its first version also creates it)."""
    auth.authorize(principal, Role.publisher, model=body.name)
    return presenters.model_out(RegistryService(session, actor=principal.actor).create_model(body))


@router.get("/models", tags=["models"])
def list_models(
    session: SessionDep,
    principal: Reader,
    limit: Limit = 50,
    cursor: Cursor = None,
    prefix: Annotated[
        str | None,
        Query(
            pattern=r"^([a-z0-9][a-z0-9._-]{0,127})?$",
            description="Name prefix: a name's first letters.",
        ),
    ] = None,
    tag: Annotated[str | None, Query(max_length=256, description="`key=value`.")] = None,
) -> Page[ModelOut]:
    """Models by name; for a token scoped to models, only those."""
    models, next_cursor = RegistryService(session, actor=principal.actor).list_models(
        cursor=cursor, limit=limit, prefix=prefix, tag=tag, within=principal.models
    )
    return Page(items=[presenters.model_out(m) for m in models], next_cursor=next_cursor)


@router.get("/models/{name}", tags=["models"])
def get_model(name: ModelName, session: SessionDep, principal: Reader) -> ModelOut:
    return presenters.model_out(RegistryService(session, actor=principal.actor).get_model(name))


@router.patch("/models/{name}", tags=["models"])
def update_model(
    name: ModelName, body: ModelPatch, session: SessionDep, principal: Publisher
) -> ModelOut:
    service = RegistryService(session, actor=principal.actor)
    return presenters.model_out(service.update_model(name, body))


# --- versions -------------------------------------------------------------------------------


# The upload's own limit (BERTH_MAX_ARTIFACT_BYTES, counted as the body streams) applies; the
# app-wide JSON body limit would cut every model off at a megabyte.
UPLOAD_BODY_LIMIT = 2**62


@router.post(
    "/models/{name}/versions",
    status_code=201,
    tags=["versions"],
    max_body_size=UPLOAD_BODY_LIMIT,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": [PRIMARY_FILE],
                        "properties": {
                            PRIMARY_FILE: {"type": "string", "format": "binary"},
                            "metadata": {
                                "type": "string",
                                "description": "JSON: a `VersionMetadata` object.",
                            },
                        },
                        "additionalProperties": {"type": "string", "format": "binary"},
                    }
                }
            },
        }
    },
)
async def upload_version(
    name: ModelName,
    request: Request,
    session: SessionDep,
    principal: Publisher,
    settings: SettingsDep,
    store: StoreDep,
    database: DatabaseDep,
) -> VersionOut:
    """Upload a new version: an `artifact` file part, optional renditions, optional `metadata`.

    The body is streamed into the store while hashed; the version row is written only after
    every object is durable under its digest.
    """
    receiver = UploadReceiver(
        store,
        max_file_bytes=settings.max_artifact_bytes,
        max_metadata_bytes=settings.max_metadata_bytes,
        part_bytes=settings.upload_part_bytes,
        inspect=artifact_checks.start_inspection,
    )
    received = await receiver.receive(request)
    try:
        received.check_digest()
        await run_in_threadpool(artifact_checks.check_upload, received)
        files = await run_in_threadpool(received.publish, database)
    finally:
        await run_in_threadpool(received.discard)
    service = RegistryService(session, actor=principal.actor)

    def register() -> VersionOut:
        return presenters.version_out(service.register_version(name, received.metadata, files))

    return await run_in_threadpool(register)


@router.get("/models/{name}/versions", tags=["versions"])
def list_versions(
    name: ModelName,
    session: SessionDep,
    principal: Reader,
    limit: Limit = 50,
    cursor: Cursor = None,
    status: VersionStatus | None = None,
) -> Page[VersionOut]:
    """Versions, newest first."""
    versions, next_cursor = RegistryService(session, actor=principal.actor).list_versions(
        name, cursor=cursor, limit=limit, status=status
    )
    return Page(items=[presenters.version_out(v) for v in versions], next_cursor=next_cursor)


async def _shared_version(request: Request, name: str, version: int) -> VersionOut:
    """The version, read once for every request that asks for it at the same moment.

    A promotion sends every serving replica for the new version's record and then its bytes at
    once; read one by one, that was a pooled connection per replica, so the registry's Postgres
    connections grew with the fleet. Shared, it is one query per version per process. A read
    that finished is never reused (`SharedReads`), so a request that joins one sees the version
    as of at most one query's time before it arrived (a PATCH racing it may not show yet).
    """
    state = request.app.state
    shared: SharedReads[VersionOut] = state.version_reads

    def fetch() -> VersionOut:
        with state.db.transaction(write=False) as session:
            row = RegistryService(session, actor="reader").get_version(name, version)
            return presenters.version_out(row)

    return await shared.read((name, version), partial(run_in_threadpool, fetch))


@router.get("/models/{name}/versions/{version}", tags=["versions"])
async def get_version(
    name: ModelName, version: VersionNumber, request: Request, principal: Reader
) -> VersionOut:
    return await _shared_version(request, name, version)


@router.patch("/models/{name}/versions/{version}", tags=["versions"])
def update_version(
    name: ModelName,
    version: VersionNumber,
    body: VersionPatch,
    session: SessionDep,
    principal: Publisher,
) -> VersionOut:
    service = RegistryService(session, actor=principal.actor)
    return presenters.version_out(service.update_version(name, version, body))


@router.post("/models/{name}/versions/{version}/archive", tags=["versions"])
def archive_version(
    name: ModelName, version: VersionNumber, session: SessionDep, principal: Admin
) -> VersionOut:
    """Archive a version: it stays readable but no alias may route to it. 409 while one does."""
    service = RegistryService(session, actor=principal.actor)
    return presenters.version_out(service.archive_version(name, version))


_ARTIFACT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/octet-stream": {}}, "description": "The bytes."},
    307: {"description": "Redirect to a short-lived presigned URL in the artifact store."},
}


@router.get(
    "/models/{name}/versions/{version}/artifact",
    tags=["versions"],
    response_class=Response,
    responses=_ARTIFACT_RESPONSES,
)
async def download_artifact(
    name: ModelName,
    version: VersionNumber,
    request: Request,
    principal: Reader,
    settings: SettingsDep,
    store: StoreDep,
) -> Response:
    """The primary artifact's bytes; `X-Berth-Sha256` carries the digest to verify."""
    file = _file_of(await _shared_version(request, name, version), PRIMARY_FILE)
    return _file_response(store, settings, file, filename=f"{name}-v{version}.{file.name}")


@router.get(
    "/models/{name}/versions/{version}/files/{file}",
    tags=["versions"],
    response_class=Response,
    responses=_ARTIFACT_RESPONSES,
)
async def download_file(
    name: ModelName,
    version: VersionNumber,
    file: FileName,
    request: Request,
    principal: Reader,
    settings: SettingsDep,
    store: StoreDep,
) -> Response:
    """Any file of a version by its part name (`artifact`, `onnx`, ...)."""
    found = _file_of(await _shared_version(request, name, version), file)
    return _file_response(store, settings, found, filename=f"{name}-v{version}.{found.name}")


def _file_of(version: VersionOut, name: str) -> FileOut:
    for file in version.files:
        if file.name == name:
            return file
    raise FileNotFound(version.model, version.version, name)


def _file_response(
    store: ArtifactStore, settings: RegistrySettings, file: FileOut, *, filename: str
) -> Response:
    headers = {"X-Berth-Sha256": file.sha256, "ETag": f'"{file.sha256}"'}
    if settings.artifact_redirect:
        url = store.presigned_url(file.sha256, expires=settings.presign_seconds, filename=filename)
        if url is not None:
            return RedirectResponse(url, status_code=307, headers=headers)
    path = store.local_path(file.sha256)
    if path is not None:
        return FileResponse(path, media_type=file.media_type, filename=filename, headers=headers)
    headers["Content-Length"] = str(file.size)
    headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return StreamingResponse(
        store.iter_bytes(file.sha256), media_type=file.media_type, headers=headers
    )


# --- aliases --------------------------------------------------------------------------------


@router.get("/models/{name}/aliases", tags=["aliases"])
def list_aliases(name: ModelName, session: SessionDep, principal: Reader) -> list[AliasOut]:
    service = RegistryService(session, actor=principal.actor)
    model = service.get_model(name)
    return [presenters.alias_out(a) for a in repo.live_aliases_of_model(session, model.id)]


@router.get("/models/{name}/aliases/{alias}", tags=["aliases"])
def get_alias(
    name: ModelName,
    alias: AliasName,
    session: SessionDep,
    principal: Reader,
    settings: SettingsDep,
    response: Response,
) -> AliasOut:
    """The alias's current spec, its revision (also the ETag) and per-replica rollout."""
    service = RegistryService(session, actor=principal.actor)
    row = service.get_alias(name, alias)
    _etag(response, row.revision)
    return presenters.alias_out(
        row, service.rollout(row, revision=None, ttl=settings.replica_ttl_seconds)
    )


@router.put("/models/{name}/aliases/{alias}", tags=["aliases"])
def set_alias(
    name: ModelName,
    alias: AliasName,
    body: AliasUpdate,
    session: SessionDep,
    principal: Publisher,
    if_match: IfMatch,
    response: Response,
) -> AliasOut:
    """Promote: point the alias at one version, or split traffic between weighted variants."""
    row = RegistryService(session, actor=principal.actor).set_alias(
        name, alias, body, if_match=if_match
    )
    _etag(response, row.revision)
    return presenters.alias_out(row)


@router.delete("/models/{name}/aliases/{alias}", status_code=204, tags=["aliases"])
def delete_alias(
    name: ModelName, alias: AliasName, session: SessionDep, principal: Publisher, if_match: IfMatch
) -> Response:
    RegistryService(session, actor=principal.actor).delete_alias(name, alias, if_match=if_match)
    return Response(status_code=204)


@router.post("/models/{name}/aliases/{alias}/rollback", tags=["aliases"])
def rollback_alias(
    name: ModelName,
    alias: AliasName,
    session: SessionDep,
    principal: Publisher,
    if_match: IfMatch,
    response: Response,
    body: RollbackRequest | None = None,
) -> AliasOut:
    """Restore the spec before the current one (or `to_revision`) as a new revision."""
    row = RegistryService(session, actor=principal.actor).rollback_alias(
        name, alias, body or RollbackRequest(), if_match=if_match
    )
    _etag(response, row.revision)
    return presenters.alias_out(row)


@router.get("/models/{name}/aliases/{alias}/history", tags=["aliases"])
def alias_history(
    name: ModelName,
    alias: AliasName,
    session: SessionDep,
    principal: Reader,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[AliasRevisionOut]:
    """Every revision of the alias, newest first."""
    revisions, next_cursor = RegistryService(session, actor=principal.actor).alias_history(
        name, alias, cursor=cursor, limit=limit
    )
    return Page(items=[presenters.revision_out(r) for r in revisions], next_cursor=next_cursor)


@router.get("/models/{name}/aliases/{alias}/rollout", tags=["aliases"])
async def alias_rollout(
    name: ModelName,
    alias: AliasName,
    request: Request,
    principal: Reader,
    settings: SettingsDep,
    database: DatabaseDep,
    revision: Annotated[
        int | None, Query(ge=1, le=2**31 - 1, description="Default: the current one.")
    ] = None,
    wait: Annotated[float, Query(ge=0, le=600, description="Seconds to wait for it.")] = 0,
) -> Rollout:
    """Which live replicas serve which revision; with `wait`, returns once all serve it.

    A wait is bounded by BERTH_FEED_MAX_WAIT_SECONDS, as the change feed's is: past it the answer
    says `converged: false` and the client asks again, so no request holds a connection for the
    ten minutes `wait` allows.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(wait, settings.feed_max_wait_seconds)
    signal = request.app.state.replica_signal

    def read() -> Rollout:
        with database.transaction(write=False) as session:
            service = RegistryService(session, actor=principal.actor)
            row = service.get_alias(name, alias)
            return service.rollout(row, revision=revision, ttl=settings.replica_ttl_seconds)

    async with _disconnect_watch(request) as gone:
        while True:
            seen = signal.position
            rollout = await run_in_threadpool(read)
            remaining = deadline - loop.time()
            if rollout.converged or remaining <= 0 or gone.is_set():
                return rollout
            # Heartbeats to this process wake us at once; other processes' are polled.
            await _first(signal.wait_past(seen, min(remaining, 0.25)), gone.wait())


# --- the change feed ------------------------------------------------------------------------


@router.get("/routing", tags=["feed"])
def routing(session: SessionDep, principal: Reader) -> RoutingSnapshot:
    """Every live alias's spec (of the token's models, if scoped) and the feed position to
    follow `/changes` from."""
    service = RegistryService(session, actor=principal.actor)
    position, aliases = service.routing_snapshot(within=principal.models)
    return RoutingSnapshot(
        position=position, aliases=[presenters.routing_entry(a) for a in aliases]
    )


@router.get("/changes", tags=["feed"])
async def changes(
    request: Request,
    principal: Reader,
    settings: SettingsDep,
    database: DatabaseDep,
    after: Annotated[
        int, Query(ge=0, le=2**63 - 1, description="The last position you applied.")
    ] = 0,
    wait: Annotated[float, Query(ge=0, le=600, description="Long-poll for up to this long.")] = 0,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> ChangesOut:
    """Alias revisions after `after`, in order, never skipping one; long-polls with `wait`.

    A waiting request holds no thread: it sleeps on the event loop until a commit in this
    process, a NOTIFY from another, or the fallback poll moves the feed past `after`.
    A token scoped to models sees only their changes, but `position` still moves past the
    others, so it never reads one twice; it waits on while only other models change.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(wait, settings.feed_max_wait_seconds)
    signal = request.app.state.feed_signal
    shared: SharedReads[ChangesOut] = request.app.state.feed_reads

    def read(position: int) -> ChangesOut:
        with database.transaction(write=False) as session:
            # Reading the feed records nothing, so one read can answer every reader.
            service = RegistryService(session, actor="feed")
            head = service.feed_position()
            rows = service.changes(position, limit)
            out = ChangesOut(
                changes=[presenters.change_out(r) for r in rows],
                position=rows[-1].seq if rows else position,
                head=max(head, rows[-1].seq if rows else 0),
            )
        if position > out.head:
            # A position the feed never reached (a restored database, another registry's feed):
            # waiting would return nothing forever; the reader must take a fresh snapshot.
            raise InvalidCursor(
                f"position {position} is ahead of the feed (head {out.head}); take a new "
                "snapshot from /api/v1/routing",
                detail={"after": position, "head": out.head},
            )
        return out

    async with _disconnect_watch(request) as gone:
        while True:
            # Every replica woken by the same commit asks the same question: one query answers all.
            out = await shared.read((after, limit), partial(run_in_threadpool, read, after))
            signal.advance(out.head)
            visible = [c for c in out.changes if principal.sees(c.model)]
            remaining = deadline - loop.time()
            if visible or remaining <= 0 or gone.is_set():
                return ChangesOut(changes=visible, position=out.position, head=out.head)
            if out.position > after:
                # Only other models' changes: step past them and wait for one of ours.
                after = out.position
                continue
            if signal.position > after:
                # Told of a change we cannot see yet; give replication of the commit a moment.
                await asyncio.sleep(min(0.05, remaining))
                continue
            await _first(signal.wait_past(after, remaining), gone.wait())


# --- replicas, audit, gc --------------------------------------------------------------------


@router.put("/replicas/{replica_id}", tags=["replicas"])
def report_replica(
    replica_id: ReplicaId,
    body: ReplicaReport,
    session: ReplicaSessionDep,
    principal: Reader,
    settings: SettingsDep,
) -> ReplicaOut:
    """A serving replica's heartbeat: what it serves and what failed to load.

    Reader is enough: a replica only reports, and serving should hold no publishing rights. The
    first token to report as `replica_id` owns it; any other token gets 403.
    """
    service = RegistryService(session, actor=principal.actor)
    replica = service.report_replica(replica_id, body, token_id=principal.token_id)
    session.info["replica_reported"] = True
    return presenters.replica_out(replica, live=True)


@router.delete("/replicas/{replica_id}", status_code=204, tags=["replicas"])
def remove_replica(
    replica_id: ReplicaId, session: ReplicaSessionDep, principal: Reader
) -> Response:
    """A replica shutting down says so, so rollouts stop waiting for it at once.

    Only the token that registered the replica, or an admin over every model, may remove it:
    removing a replica is what lets a rollout count as done without it.
    """
    RegistryService(session, actor=principal.actor).remove_replica(
        replica_id,
        token_id=principal.token_id,
        any_owner=principal.role is Role.admin and principal.models is None,
    )
    session.info["replica_reported"] = True
    return Response(status_code=204)


@router.get("/replicas", tags=["replicas"])
def list_replicas(
    session: SessionDep, principal: Reader, settings: SettingsDep
) -> list[ReplicaOut]:
    """Every replica that reported; for a scoped token, what each serves of its models only."""
    live_since = utcnow() - timedelta(seconds=settings.replica_ttl_seconds)
    return [
        presenters.replica_out(r, live=r.last_seen >= live_since, within=principal.models)
        for r in RegistryService(session, actor=principal.actor).replicas()
    ]


@router.get("/audit", tags=["audit"])
def audit(
    session: SessionDep,
    principal: Reader,
    limit: Limit = 50,
    cursor: Cursor = None,
    model: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
) -> Page[AuditEventOut]:
    """Every mutation, newest first; for a token scoped to models, only theirs.

    Filtering on a model outside the token's scope is 403, as that model's own routes answer.
    """
    if model is not None:
        auth.authorize(principal, Role.reader, model=model)
    events, next_cursor = RegistryService(session, actor=principal.actor).audit(
        model=model, cursor=cursor, limit=limit, within=principal.models
    )
    return Page(items=[presenters.audit_out(e) for e in events], next_cursor=next_cursor)


@router.post("/gc", tags=["admin"])
def garbage_collect(
    principal: RegistryAdmin,
    settings: SettingsDep,
    store: StoreDep,
    database: DatabaseDep,
    dry_run: bool = False,
) -> GcReport:
    """Delete objects no version references, older than the grace period."""
    report = collect_garbage(
        database, store, grace_seconds=settings.gc_grace_seconds, dry_run=dry_run
    )
    with database.transaction() as session:
        repo.add_audit(
            session,
            actor=principal.actor,
            action="gc",
            detail=report.model_dump() | {"dry_run": dry_run},
        )
    return report


# --- tokens ---------------------------------------------------------------------------------


@router.post("/tokens", status_code=201, tags=["admin"])
def create_token(body: TokenCreate, session: SessionDep, principal: RegistryAdmin) -> TokenCreated:
    """Create a token. The secret is in this response only; it is stored as a hash."""
    token, secret = auth.create_token(session, body, created_by=principal.actor)
    return TokenCreated(**presenters.token_out(token).model_dump(), token=secret)


@router.get("/tokens", tags=["admin"])
def list_tokens(session: SessionDep, principal: RegistryAdmin) -> list[TokenOut]:
    return [presenters.token_out(t) for t in auth.list_tokens(session)]


@router.delete("/tokens/{token_id}", tags=["admin"])
def revoke_token(
    token_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
    session: SessionDep,
    request: Request,
    principal: RegistryAdmin,
) -> TokenOut:
    revoked = auth.revoke_token(session, token_id, actor=principal.actor)
    # Once committed, not before: a failed commit leaves the token valid, and a request racing
    # this one could otherwise re-cache it from the not-yet-committed state.
    cache = request.app.state.token_cache
    session.info["after_commit"].append(cache.clear)
    return presenters.token_out(revoked)


@router.get("/whoami", tags=["admin"])
def whoami(principal: Reader) -> dict[str, Any]:
    """The caller's identity and role as the registry sees it, and the registry's version."""
    return {
        "registry_version": __version__,
        "name": principal.name,
        "role": principal.role.value,
        "models": sorted(principal.models) if principal.models is not None else None,
    }


# --- health ---------------------------------------------------------------------------------

health_router = APIRouter(tags=["health"])


@health_router.get("/healthz", dependencies=[Public])
def healthz() -> dict[str, str]:
    """Alive: the process answers. Says nothing about its dependencies."""
    return {"status": "ok"}


@health_router.get("/readyz", dependencies=[Public], responses={503: {"model": Health}})
def readyz(database: DatabaseDep, store: StoreDep, response: Response) -> Health:
    """Ready: the database and the artifact store both answer."""
    checks: dict[str, str] = {}
    for name, probe in (("database", database.ping), ("artifact_store", store.check)):
        try:
            probe()
            checks[name] = "ok"
        except Unavailable as exc:
            checks[name] = exc.message
    healthy = all(v == "ok" for v in checks.values())
    if not healthy:
        response.status_code = 503
    return Health(status="ok" if healthy else "degraded", checks=checks)
