"""All SQL the registry runs, as SQLAlchemy statements. Flushes; never commits."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import CursorResult, Select, delete, func, literal, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from registry.models import (
    Alias,
    AliasRevision,
    AuditEvent,
    Blob,
    FeedCounter,
    Model,
    ModelVersion,
    Replica,
    Token,
    VersionFile,
    utcnow,
)

FEED_CHANNEL = "berth_feed"


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def _upsert(session: Session, entity: Any) -> Any:
    """A Core INSERT that can say ON CONFLICT, in the session's dialect.

    Core, not ORM-enabled: ORM bulk inserts do not report what ON CONFLICT did.
    """
    insert = postgresql.insert if _dialect(session) == "postgresql" else sqlite.insert
    return insert(entity.__table__)


# --- models ---------------------------------------------------------------------------------


def get_model(session: Session, name: str, *, for_update: bool = False) -> Model | None:
    stmt = select(Model).where(Model.name == name)
    if for_update:
        stmt = stmt.with_for_update()
    return session.scalars(stmt).one_or_none()


def insert_model(
    session: Session, name: str, *, created_by: str, description: str = "", tags: dict[str, str]
) -> bool:
    """Insert the model unless it exists; True if this call created it.

    ON CONFLICT DO NOTHING lets sixteen concurrent first uploads agree on one row without any of
    them failing on the unique constraint.
    """
    now = utcnow()
    stmt = (
        _upsert(session, Model)
        .values(
            name=name,
            description=description,
            tags=tags,
            latest_version=0,
            created_by=created_by,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=["name"])
        .returning(Model.__table__.c.id)
    )
    return session.execute(stmt).scalar_one_or_none() is not None


def list_models(
    session: Session,
    *,
    after: str | None,
    limit: int,
    prefix: str | None,
    tag: tuple[str, str] | None,
    names: Collection[str] | None = None,
) -> Sequence[Model]:
    """Models by name; only those in `names` when it is given."""
    stmt = select(Model).order_by(Model.name).limit(limit)
    if names is not None:
        stmt = stmt.where(Model.name.in_(names))
    if after is not None:
        stmt = stmt.where(Model.name > after)
    if prefix:
        stmt = stmt.where(Model.name.startswith(prefix, autoescape=True))
    if tag is not None:
        stmt = stmt.where(_json_text(session, Model.tags, tag[0]) == tag[1])
    return session.scalars(stmt).all()


def _json_text(session: Session, column: Any, key: str) -> Any:
    if _dialect(session) == "postgresql":
        return column.op("->>")(key)
    return func.json_extract(column, literal("$." + _json_path_key(key)))


def _json_path_key(key: str) -> str:
    # SQLite JSON paths: quote the key so dots and brackets in tag names stay literal.
    return '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --- versions -------------------------------------------------------------------------------


def get_version(session: Session, model_id: int, version: int) -> ModelVersion | None:
    stmt = select(ModelVersion).where(
        ModelVersion.model_id == model_id, ModelVersion.version == version
    )
    return session.scalars(stmt).one_or_none()


def list_versions(
    session: Session, model_id: int, *, before: int | None, limit: int, status: str | None
) -> Sequence[ModelVersion]:
    stmt = (
        select(ModelVersion)
        .where(ModelVersion.model_id == model_id)
        .order_by(ModelVersion.version.desc())
        .limit(limit)
    )
    if before is not None:
        stmt = stmt.where(ModelVersion.version < before)
    if status is not None:
        stmt = stmt.where(ModelVersion.status == status)
    return session.scalars(stmt).all()


def claim_blob(session: Session, sha256: str, size: int) -> None:
    """Record that an upload is about to publish `sha256`, refreshing the claim if it exists."""
    now = utcnow()
    stmt = _upsert(session, Blob).values(sha256=sha256, size=size, claimed_at=now)
    stmt = stmt.on_conflict_do_update(index_elements=["sha256"], set_={"claimed_at": now})
    session.execute(stmt)


def lock_blob_for_collection(session: Session, sha256: str, size: int, epoch: datetime) -> Blob:
    """Lock the blob's row, creating a never-claimed one for an object no upload recorded."""
    session.execute(
        _upsert(session, Blob)
        .values(sha256=sha256, size=size, claimed_at=epoch)
        .on_conflict_do_nothing(index_elements=["sha256"])
    )
    return session.scalars(
        select(Blob)
        .where(Blob.sha256 == sha256)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()


def blob_claimed_at(session: Session, sha256: str) -> datetime | None:
    return session.scalars(select(Blob.claimed_at).where(Blob.sha256 == sha256)).one_or_none()


def blob_is_referenced(session: Session, sha256: str) -> bool:
    stmt = select(literal(1)).where(VersionFile.sha256 == sha256).limit(1)
    return session.execute(stmt).first() is not None


def delete_blob_row(session: Session, sha256: str) -> None:
    session.execute(delete(Blob).where(Blob.sha256 == sha256))


# --- aliases and the feed -------------------------------------------------------------------


def get_alias(
    session: Session, model_id: int, name: str, *, for_update: bool = False
) -> Alias | None:
    stmt = select(Alias).where(Alias.model_id == model_id, Alias.name == name)
    if for_update:
        stmt = stmt.with_for_update()
    return session.scalars(stmt).one_or_none()


def insert_alias_if_absent(session: Session, model_id: int, name: str, *, actor: str) -> None:
    """Create the alias row (revision 0, no spec) unless it exists, so it can be locked."""
    stmt = (
        _upsert(session, Alias)
        .values(
            model_id=model_id,
            name=name,
            revision=0,
            spec=None,
            reason="",
            updated_by=actor,
            updated_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["model_id", "name"])
    )
    session.execute(stmt)


def live_aliases_of_model(session: Session, model_id: int) -> Sequence[Alias]:
    stmt = select(Alias).where(Alias.model_id == model_id, Alias.spec.is_not(None))
    return session.scalars(stmt.order_by(Alias.name)).all()


def live_aliases(session: Session, *, models: Collection[str] | None = None) -> Sequence[Alias]:
    """Every alias that has a spec; only those of `models` when it is given."""
    stmt = select(Alias).where(Alias.spec.is_not(None)).order_by(Alias.model_id, Alias.name)
    if models is not None:
        stmt = stmt.where(Alias.model_id.in_(select(Model.id).where(Model.name.in_(models))))
    return session.scalars(stmt).all()


def next_feed_position(session: Session) -> int:
    """Take the next feed position, holding the counter row's lock until commit.

    This serialises alias changes across every registry process, so positions become visible in
    order: a reader of `seq > N` can never see N+2 and later find N+1.
    """
    stmt = (
        update(FeedCounter)
        .where(FeedCounter.id == 1)
        .values(position=FeedCounter.position + 1)
        .returning(FeedCounter.position)
    )
    return int(session.execute(stmt).scalar_one())


def notify_feed(session: Session, position: int) -> None:
    """Wake other registry processes' feed waiters when this transaction commits (Postgres)."""
    if _dialect(session) == "postgresql":
        session.execute(
            text("SELECT pg_notify(:channel, :payload)"),
            {
                "channel": FEED_CHANNEL,
                "payload": str(position),
            },
        )


def feed_position(session: Session) -> int:
    return int(
        session.execute(select(FeedCounter.position).where(FeedCounter.id == 1)).scalar_one()
    )


def changes_after(session: Session, after: int, limit: int) -> Sequence[AliasRevision]:
    stmt = (
        select(AliasRevision)
        .where(AliasRevision.seq > after)
        .order_by(AliasRevision.seq)
        .limit(limit)
    )
    return session.scalars(stmt).all()


def alias_history(
    session: Session, alias_id: int, *, before: int | None, limit: int
) -> Sequence[AliasRevision]:
    stmt = (
        select(AliasRevision)
        .where(AliasRevision.alias_id == alias_id)
        .order_by(AliasRevision.revision.desc())
        .limit(limit)
    )
    if before is not None:
        stmt = stmt.where(AliasRevision.revision < before)
    return session.scalars(stmt).all()


def get_revision(session: Session, alias_id: int, revision: int) -> AliasRevision | None:
    stmt = select(AliasRevision).where(
        AliasRevision.alias_id == alias_id, AliasRevision.revision == revision
    )
    return session.scalars(stmt).one_or_none()


def latest_revision(session: Session, alias_id: int) -> AliasRevision | None:
    stmt = (
        select(AliasRevision)
        .where(AliasRevision.alias_id == alias_id)
        .order_by(AliasRevision.revision.desc())
        .limit(1)
    )
    return session.scalars(stmt).one_or_none()


# --- audit ----------------------------------------------------------------------------------


def add_audit(
    session: Session,
    *,
    actor: str,
    action: str,
    model: str | None = None,
    version: int | None = None,
    alias: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    session.add(
        AuditEvent(
            actor=actor,
            action=action,
            model=model,
            version=version,
            alias=alias,
            detail=detail or {},
            at=utcnow(),
        )
    )


def list_audit(
    session: Session,
    *,
    model: str | None,
    before: int | None,
    limit: int,
    models: Collection[str] | None = None,
) -> Sequence[AuditEvent]:
    """Events newest first; only those of `models` when it is given (which leaves out the events
    of no model: tokens, gc)."""
    stmt: Select[AuditEvent] = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if model is not None:
        stmt = stmt.where(AuditEvent.model == model)
    if models is not None:
        stmt = stmt.where(AuditEvent.model.in_(models))
    if before is not None:
        stmt = stmt.where(AuditEvent.id < before)
    return session.scalars(stmt).all()


# --- replicas -------------------------------------------------------------------------------


def upsert_replica(
    session: Session, replica_id: str, values: dict[str, Any], *, owner: int | None
) -> Replica | None:
    """Insert or update the replica's row, unless another token owns it (then None).

    One statement decides, so two tokens registering the same new id at once cannot both win.
    A row without an owner is adopted by the first token that reports as it.
    """
    values = values | ({"token_id": owner} if owner is not None else {})
    table = Replica.__table__.c
    stmt = (
        _upsert(session, Replica)
        .values(id=replica_id, **values)
        .on_conflict_do_update(
            index_elements=["id"],
            set_=values,
            where=or_(table.token_id.is_(None), table.token_id == owner),
        )
        .returning(table.id)
    )
    if session.execute(stmt).first() is None:
        return None
    return session.get(Replica, replica_id, populate_existing=True)


def get_replica(session: Session, replica_id: str) -> Replica | None:
    return session.get(Replica, replica_id)


def list_replicas(session: Session, *, seen_since: datetime | None = None) -> Sequence[Replica]:
    stmt = select(Replica).order_by(Replica.id)
    if seen_since is not None:
        stmt = stmt.where(Replica.last_seen >= seen_since)
    return session.scalars(stmt).all()


def delete_replica(
    session: Session, replica_id: str, *, owner: int | None, any_owner: bool = False
) -> bool:
    """Delete the replica's row if `owner` may (it owns the row, the row has no owner, or
    `any_owner`); True if a row was deleted."""
    stmt = delete(Replica).where(Replica.id == replica_id)
    if not any_owner:
        stmt = stmt.where(or_(Replica.token_id.is_(None), Replica.token_id == owner))
    return session.execute(stmt.returning(Replica.id)).first() is not None


def delete_replicas_older_than(session: Session, cutoff: datetime) -> int:
    result: CursorResult[Any] = session.execute(delete(Replica).where(Replica.last_seen < cutoff))  # type: ignore[assignment]
    return result.rowcount or 0


# --- tokens ---------------------------------------------------------------------------------


def add_token(session: Session, token: Token) -> Token:
    session.add(token)
    session.flush()
    return token


def token_by_hash(session: Session, secret_hash: str) -> Token | None:
    return session.scalars(select(Token).where(Token.secret_hash == secret_hash)).one_or_none()


def get_token(session: Session, token_id: int) -> Token | None:
    return session.get(Token, token_id)


def list_tokens(session: Session) -> Sequence[Token]:
    return session.scalars(select(Token).order_by(Token.id)).all()


def count_tokens(session: Session) -> int:
    return int(session.execute(select(func.count()).select_from(Token)).scalar_one())


def touch_token(session: Session, token_id: int, at: datetime) -> None:
    session.execute(update(Token).where(Token.id == token_id).values(last_used_at=at))
