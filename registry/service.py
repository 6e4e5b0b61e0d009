"""The registry's rules: versions, aliases and their history, the feed, replicas, gc.

Services flush; the caller's transaction commits. Lock order, always: model row, then the feed
counter (taken last, right before a revision is written), so concurrent writers never deadlock.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from registry import repository as repo
from registry.db import Database
from registry.errors import (
    AliasNotFound,
    Forbidden,
    InvalidCursor,
    InvalidInput,
    ModelExists,
    ModelNotFound,
    NothingToRollBack,
    ReplicaNotFound,
    RevisionMismatch,
    RevisionNotFound,
    UnknownVersion,
    VersionArchived,
    VersionInUse,
    VersionNotFound,
)
from registry.models import Alias, AliasRevision, Model, ModelVersion, Replica, VersionFile, utcnow
from registry.schemas import (
    PRIMARY_FILE,
    AliasUpdate,
    GcReport,
    ModelCreate,
    ModelPatch,
    ReplicaReport,
    ReplicaRollout,
    RollbackRequest,
    Rollout,
    RoutingSpec,
    VersionMetadata,
    VersionPatch,
    VersionStatus,
)
from registry.storage import ArtifactStore

log = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class StoredFile:
    """A file of an upload, already durable in the artifact store under its digest."""

    name: str
    sha256: str
    size: int
    media_type: str


# --- cursors --------------------------------------------------------------------------------


def encode_cursor(value: str | int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"k": value}).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None, kind: type[str] | type[int]) -> Any:
    """The key a cursor encodes; `InvalidCursor` (400) for anything we did not hand out."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw)["k"]
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise InvalidCursor(f"cursor {cursor[:64]!r} is not one this API issued") from exc
    if not isinstance(value, kind) or isinstance(value, bool):
        raise InvalidCursor(f"cursor {cursor[:64]!r} is not one this API issued")
    return value


# --- the service ----------------------------------------------------------------------------


class RegistryService:
    """Operations on one session, on behalf of one actor (named in the audit trail)."""

    def __init__(self, session: Session, *, actor: str) -> None:
        self.session = session
        self.actor = actor

    def _audit(self, action: str, **fields: Any) -> None:
        repo.add_audit(self.session, actor=self.actor, action=action, **fields)

    # --- models ---

    def create_model(self, data: ModelCreate) -> Model:
        if not repo.insert_model(
            self.session,
            data.name,
            created_by=self.actor,
            description=data.description,
            tags=data.tags,
        ):
            raise ModelExists(data.name)
        self._audit("model.create", model=data.name)
        return self.get_model(data.name)

    def get_model(self, name: str, *, for_update: bool = False) -> Model:
        model = repo.get_model(self.session, name, for_update=for_update)
        if model is None:
            raise ModelNotFound(name)
        return model

    def list_models(
        self,
        *,
        cursor: str | None,
        limit: int,
        prefix: str | None,
        tag: str | None,
        within: Collection[str] | None = None,
    ) -> tuple[Sequence[Model], str | None]:
        """A page of models by name; only those in `within` (a token's scope) when given."""
        tag_filter: tuple[str, str] | None = None
        if tag is not None:
            key, sep, value = tag.partition("=")
            if not sep or not key:
                raise InvalidInput(f"tag filter {tag!r} must look like key=value")
            tag_filter = (key, value)
        models = repo.list_models(
            self.session,
            after=decode_cursor(cursor, str),
            limit=limit + 1,
            prefix=prefix,
            tag=tag_filter,
            names=within,
        )
        return _page(models, limit, key=lambda m: m.name)

    def update_model(self, name: str, patch: ModelPatch) -> Model:
        model = self.get_model(name, for_update=True)
        changed = patch.model_dump(exclude_unset=True, exclude_none=True)
        if "description" in changed:
            model.description = changed["description"]
        if "tags" in changed:
            model.tags = changed["tags"]
        model.updated_at = utcnow()
        self._audit("model.update", model=name, detail=changed)
        self.session.flush()
        return model

    # --- versions ---

    def register_version(
        self, name: str, metadata: VersionMetadata, files: Sequence[StoredFile]
    ) -> ModelVersion:
        """Register a version whose files are already in the store; allocates the next number.

        The model row's lock makes numbering gap-free under concurrent uploads; the blob rows the
        files reference were claimed before the objects were published.
        """
        by_name = {f.name: f for f in files}
        primary = by_name.get(PRIMARY_FILE)
        if primary is None:
            raise InvalidInput(f"the upload has no '{PRIMARY_FILE}' file part")
        if repo.insert_model(self.session, name, created_by=self.actor, tags={}):
            self._audit("model.create", model=name, detail={"via": "upload"})
        model = self.get_model(name, for_update=True)
        model.latest_version += 1
        model.updated_at = utcnow()
        version = ModelVersion(
            model_id=model.id,
            version=model.latest_version,
            status=VersionStatus.ready.value,
            flavor=metadata.flavor,
            sha256=primary.sha256,
            size=primary.size,
            signature=_dump(metadata.signature),
            example=_dump(metadata.example),
            metrics=metadata.metrics,
            params=metadata.params,
            tags=metadata.tags,
            description=metadata.description,
            lineage=_dump(metadata.lineage),
            created_by=self.actor,
            created_at=utcnow(),
        )
        version.model = model
        version.files = [
            VersionFile(name=f.name, sha256=f.sha256, size=f.size, media_type=f.media_type)
            for f in sorted(files, key=lambda f: (f.name != PRIMARY_FILE, f.name))
        ]
        self.session.add(version)
        self.session.flush()
        self._audit(
            "version.create",
            model=name,
            version=version.version,
            detail={"sha256": primary.sha256, "size": primary.size, "files": sorted(by_name)},
        )
        return version

    def get_version(self, name: str, number: int) -> ModelVersion:
        model = self.get_model(name)
        version = repo.get_version(self.session, model.id, number)
        if version is None:
            raise VersionNotFound(name, number)
        return version

    def list_versions(
        self, name: str, *, cursor: str | None, limit: int, status: VersionStatus | None
    ) -> tuple[Sequence[ModelVersion], str | None]:
        model = self.get_model(name)
        versions = repo.list_versions(
            self.session,
            model.id,
            before=decode_cursor(cursor, int),
            limit=limit + 1,
            status=status.value if status else None,
        )
        return _page(versions, limit, key=lambda v: v.version)

    def update_version(self, name: str, number: int, patch: VersionPatch) -> ModelVersion:
        version = self.get_version(name, number)
        changed = patch.model_dump(exclude_unset=True, exclude_none=True)
        if "description" in changed:
            version.description = changed["description"]
        if "tags" in changed:
            version.tags = changed["tags"]
        self._audit("version.update", model=name, version=number, detail=changed)
        self.session.flush()
        return version

    def archive_version(self, name: str, number: int) -> ModelVersion:
        """Archive a version; `VersionInUse` (409) while any alias routes to it."""
        model = self.get_model(name, for_update=True)
        version = repo.get_version(self.session, model.id, number)
        if version is None:
            raise VersionNotFound(name, number)
        users = [
            alias.name
            for alias in repo.live_aliases_of_model(self.session, model.id)
            if number in _spec(alias).versions()
        ]
        if users:
            raise VersionInUse(
                f"version {number} of model '{name}' is used by alias "
                + ", ".join(f"'{a}'" for a in users),
                detail={"aliases": users},
            )
        if version.status != VersionStatus.archived.value:
            version.status = VersionStatus.archived.value
            version.archived_at = utcnow()
            self._audit("version.archive", model=name, version=number)
        self.session.flush()
        return version

    # --- aliases ---

    def get_alias(self, name: str, alias: str) -> Alias:
        model = self.get_model(name)
        row = repo.get_alias(self.session, model.id, alias)
        if row is None or row.spec is None:
            raise AliasNotFound(name, alias)
        return row

    def alias_history(
        self, name: str, alias: str, *, cursor: str | None, limit: int
    ) -> tuple[Sequence[AliasRevision], str | None]:
        model = self.get_model(name)
        row = repo.get_alias(self.session, model.id, alias)
        if row is None:
            raise AliasNotFound(name, alias)
        revisions = repo.alias_history(
            self.session, row.id, before=decode_cursor(cursor, int), limit=limit + 1
        )
        return _page(revisions, limit, key=lambda r: r.revision)

    def set_alias(
        self, name: str, alias: str, update: AliasUpdate, *, if_match: int | None
    ) -> Alias:
        """Point the alias at a version or weighted variants, appending a revision."""
        model = self.get_model(name, for_update=True)
        spec = update.to_spec()
        self._check_routable(model, spec)
        row = self._alias_row(model, alias, if_match=if_match, must_exist=False)
        self._append_revision(
            model, row, action="set", spec=spec, reason=update.reason, restored=None
        )
        return row

    def rollback_alias(
        self, name: str, alias: str, request: RollbackRequest, *, if_match: int | None
    ) -> Alias:
        """Restore an earlier spec as a new revision.

        Without `to_revision` it walks back from where the current revision's spec came from, so
        promote v1, v2, v3 then rollback, rollback serves v2 then v1: it never toggles.
        """
        model = self.get_model(name, for_update=True)
        row = self._alias_row(model, alias, if_match=if_match, must_exist=False)
        current = repo.latest_revision(self.session, row.id) if row.revision else None
        if current is None:
            raise AliasNotFound(name, alias)
        if request.to_revision is not None:
            target = repo.get_revision(self.session, row.id, request.to_revision)
            if target is None:
                raise RevisionNotFound(
                    f"alias '{alias}' of model '{name}' has no revision {request.to_revision}",
                    detail={"model": name, "alias": alias, "revision": request.to_revision},
                )
            if target.spec is None:
                raise InvalidInput(
                    f"revision {target.revision} of alias '{alias}' deleted it; "
                    "there is nothing to restore",
                    detail={"revision": target.revision},
                )
        else:
            target = self._rollback_target(row, current)
            if target is None:
                raise NothingToRollBack(
                    f"alias '{alias}' of model '{name}' has no earlier revision to roll back to",
                    detail={"model": name, "alias": alias, "revision": current.revision},
                )
        assert target.spec is not None
        spec = RoutingSpec.model_validate(target.spec)
        self._check_routable(model, spec, rolling_back_to=target.revision)
        self._append_revision(
            model,
            row,
            action="rollback",
            spec=spec,
            reason=request.reason,
            restored=target.revision,
        )
        return row

    def delete_alias(self, name: str, alias: str, *, if_match: int | None) -> None:
        model = self.get_model(name, for_update=True)
        row = self._alias_row(model, alias, if_match=if_match, must_exist=True)
        self._append_revision(model, row, action="delete", spec=None, reason="", restored=None)

    def _alias_row(
        self, model: Model, alias: str, *, if_match: int | None, must_exist: bool
    ) -> Alias:
        repo.insert_alias_if_absent(self.session, model.id, alias, actor=self.actor)
        row = repo.get_alias(self.session, model.id, alias)
        assert row is not None
        self.session.refresh(row)
        if must_exist and row.spec is None:
            raise AliasNotFound(model.name, alias)
        if if_match is not None and if_match != row.revision:
            raise RevisionMismatch(
                f"alias '{alias}' of model '{model.name}' is at revision {row.revision}, "
                f"not {if_match}",
                detail={"current_revision": row.revision, "if_match": if_match},
            )
        return row

    def _rollback_target(self, row: Alias, current: AliasRevision) -> AliasRevision | None:
        before = current.base_revision
        while True:
            candidates = repo.alias_history(self.session, row.id, before=before, limit=50)
            for candidate in candidates:
                if candidate.spec is not None and candidate.spec != row.spec:
                    return candidate
            if len(candidates) < 50:
                return None
            before = candidates[-1].revision

    def _check_routable(
        self, model: Model, spec: RoutingSpec, *, rolling_back_to: int | None = None
    ) -> None:
        context = f"revision {rolling_back_to} routes to " if rolling_back_to else ""
        for number in sorted(spec.versions()):
            version = repo.get_version(self.session, model.id, number)
            if version is None:
                raise UnknownVersion(
                    f"{context}version {number} of model '{model.name}', which does not exist",
                    detail={"model": model.name, "version": number},
                )
            if version.status == VersionStatus.archived.value:
                raise VersionArchived(
                    f"{context}version {number} of model '{model.name}', which is archived",
                    detail={"model": model.name, "version": number},
                )

    def _append_revision(
        self,
        model: Model,
        row: Alias,
        *,
        action: str,
        spec: RoutingSpec | None,
        reason: str,
        restored: int | None,
    ) -> None:
        revision = row.revision + 1
        spec_json = spec.model_dump(mode="json") if spec is not None else None
        now = utcnow()
        seq = repo.next_feed_position(self.session)
        self.session.add(
            AliasRevision(
                seq=seq,
                alias_id=row.id,
                model_name=model.name,
                alias_name=row.name,
                revision=revision,
                action=action,
                spec=spec_json,
                base_revision=restored if restored is not None else revision,
                restored_revision=restored,
                reason=reason,
                created_by=self.actor,
                created_at=now,
            )
        )
        row.revision = revision
        row.spec = spec_json
        row.reason = reason
        row.updated_by = self.actor
        row.updated_at = now
        self._audit(
            f"alias.{action}",
            model=model.name,
            alias=row.name,
            version=spec.variants[0].version if spec and len(spec.variants) == 1 else None,
            detail={"revision": revision, "seq": seq, "spec": spec_json, "reason": reason}
            | ({"restored_revision": restored} if restored is not None else {}),
        )
        repo.notify_feed(self.session, seq)
        self.session.info["feed_position"] = seq
        self.session.flush()

    # --- the change feed ---

    def routing_snapshot(
        self, *, within: Collection[str] | None = None
    ) -> tuple[int, Sequence[Alias]]:
        """The feed position and every live alias (of the models in `within`, when given).

        The position is the whole feed's even for a scoped reader: it follows `/changes` from
        there, and the feed moves it past other models' changes without showing them.
        """
        # Position first: anything committed after it is also in the feed, and consumers apply
        # revisions idempotently, so a snapshot a little newer than its position is harmless.
        position = repo.feed_position(self.session)
        return position, repo.live_aliases(self.session, models=within)

    def changes(self, after: int, limit: int) -> Sequence[AliasRevision]:
        return repo.changes_after(self.session, after, limit)

    def feed_position(self) -> int:
        return repo.feed_position(self.session)

    # --- audit ---

    def audit(
        self,
        *,
        model: str | None,
        cursor: str | None,
        limit: int,
        within: Collection[str] | None = None,
    ) -> tuple[Sequence[Any], str | None]:
        """Events newest first; with `within`, only events of those models."""
        events = repo.list_audit(
            self.session,
            model=model,
            before=decode_cursor(cursor, int),
            limit=limit + 1,
            models=within,
        )
        return _page(events, limit, key=lambda e: e.id)

    # --- replicas ---

    def report_replica(
        self, replica_id: str, report: ReplicaReport, *, token_id: int | None
    ) -> Replica:
        """Record a heartbeat. The first token to report as `replica_id` owns it from then on;
        `Forbidden` for any other, so no token can fake or overwrite another's replica."""
        replica = repo.upsert_replica(
            self.session,
            replica_id,
            {
                "last_seen": utcnow(),
                "started_at": report.started_at,
                "position": report.position,
                "serving": [s.model_dump(mode="json") for s in report.serving],
                "failures": [f.model_dump(mode="json") for f in report.failures],
            },
            owner=token_id,
        )
        if replica is None:
            raise _not_the_owner(replica_id, "report as it")
        return replica

    def remove_replica(self, replica_id: str, *, token_id: int | None, any_owner: bool) -> None:
        """Forget a replica: its owner's goodbye, or an admin's (`any_owner`) clean-up.

        `ReplicaNotFound` if it never reported; `Forbidden` if another token owns it.
        """
        if repo.delete_replica(self.session, replica_id, owner=token_id, any_owner=any_owner):
            return
        if repo.get_replica(self.session, replica_id) is None:
            raise ReplicaNotFound(
                f"no replica '{replica_id}' has reported", detail={"replica_id": replica_id}
            )
        raise _not_the_owner(replica_id, "remove it, or an admin")

    def replicas(self) -> Sequence[Replica]:
        return repo.list_replicas(self.session)

    def rollout(self, alias: Alias, *, revision: int | None, ttl: float) -> Rollout:
        """Which live replicas serve which revision of `alias`."""
        target = revision if revision is not None else alias.revision
        live_since = utcnow() - timedelta(seconds=ttl)
        entries = []
        for replica in repo.list_replicas(self.session, seen_since=live_since):
            served = next(
                (
                    s["revision"]
                    for s in replica.serving
                    if s["model"] == alias.model.name and s["alias"] == alias.name
                ),
                None,
            )
            entries.append(ReplicaRollout(replica_id=replica.id, revision=served, live=True))
        converged = bool(entries) and all(
            e.revision is not None and e.revision >= target for e in entries
        )
        return Rollout(revision=target, converged=converged, replicas=entries)


def _not_the_owner(replica_id: str, what: str) -> Forbidden:
    return Forbidden(
        f"replica '{replica_id}' was registered by another token; only that token may {what}",
        detail={"replica_id": replica_id},
    )


def _spec(alias: Alias) -> RoutingSpec:
    assert alias.spec is not None
    return RoutingSpec.model_validate(alias.spec)


def _dump(value: Any) -> dict[str, Any] | None:
    return value.model_dump(mode="json", exclude_none=True) if value is not None else None


def _page(items: Sequence[T], limit: int, *, key: Any) -> tuple[Sequence[T], str | None]:
    if len(items) > limit:
        return items[:limit], encode_cursor(key(items[limit - 1]))
    return items, None


# --- garbage collection ---------------------------------------------------------------------


def collect_garbage(
    database: Database, store: ArtifactStore, *, grace_seconds: float, dry_run: bool = False
) -> GcReport:
    """Delete objects no version references and uploads abandoned longer than the grace period.

    Each candidate is decided under its blob row's lock: an upload claims that row before it
    publishes the object, so an upload in flight either sees the deletion finished (and re-creates
    the object) or has claimed the row and the object is kept.
    """
    cutoff = utcnow() - timedelta(seconds=grace_seconds)
    deleted = freed = aborted = kept_referenced = kept_young = 0
    for blob in list(store.list_blobs()):
        if blob.last_modified > cutoff:
            kept_young += 1
            continue
        with database.transaction(write=not dry_run) as session:
            if dry_run:  # decide the same way, but write nothing and lock nothing
                claimed_at = repo.blob_claimed_at(session, blob.sha256) or EPOCH
            else:
                row = repo.lock_blob_for_collection(session, blob.sha256, blob.size, EPOCH)
                claimed_at = row.claimed_at
            if repo.blob_is_referenced(session, blob.sha256):
                kept_referenced += 1
                continue
            if claimed_at > cutoff:
                kept_young += 1
                continue
            if not dry_run:
                store.delete_blob(blob.sha256)
                repo.delete_blob_row(session, blob.sha256)
            deleted += 1
            freed += blob.size
            log.info("gc: deleted unreferenced object %s (%d bytes)", blob.sha256, blob.size)
    for pending in list(store.list_pending()):
        if pending.started_at > cutoff:
            continue
        if not dry_run:
            store.delete_pending(pending)
        aborted += 1
        log.info("gc: removed abandoned upload %s", pending.id)
    return GcReport(
        deleted_blobs=deleted,
        freed_bytes=freed,
        aborted_uploads=aborted,
        kept_referenced=kept_referenced,
        kept_young=kept_young,
    )
