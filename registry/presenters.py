"""ORM rows to wire schemas. The only place that knows both shapes."""

from __future__ import annotations

from collections.abc import Collection

from registry.models import Alias, AliasRevision, AuditEvent, Model, ModelVersion, Replica, Token
from registry.schemas import (
    AliasOut,
    AliasRevisionOut,
    AuditEventOut,
    Change,
    Example,
    FileOut,
    Lineage,
    LoadFailure,
    ModelOut,
    ReplicaOut,
    RevisionAction,
    Role,
    Rollout,
    RoutingEntry,
    RoutingSpec,
    ServedAlias,
    Signature,
    TokenOut,
    VersionOut,
    VersionStatus,
)


def model_out(model: Model) -> ModelOut:
    return ModelOut(
        name=model.name,
        description=model.description,
        tags=model.tags,
        latest_version=model.latest_version,
        created_by=model.created_by,
        created_at=model.created_at,
        updated_at=model.updated_at,
    )


def version_out(version: ModelVersion) -> VersionOut:
    return VersionOut(
        model=version.model.name,
        version=version.version,
        status=VersionStatus(version.status),
        flavor=version.flavor,
        sha256=version.sha256,
        size=version.size,
        files=[
            FileOut(name=f.name, sha256=f.sha256, size=f.size, media_type=f.media_type)
            for f in version.files
        ],
        signature=Signature.model_validate(version.signature) if version.signature else None,
        example=Example.model_validate(version.example) if version.example else None,
        metrics=version.metrics,
        params=version.params,
        tags=version.tags,
        description=version.description,
        lineage=Lineage.model_validate(version.lineage) if version.lineage else None,
        created_by=version.created_by,
        created_at=version.created_at,
        archived_at=version.archived_at,
    )


def _spec(spec: dict[str, object] | None) -> RoutingSpec | None:
    return RoutingSpec.model_validate(spec) if spec is not None else None


def alias_out(alias: Alias, rollout: Rollout | None = None) -> AliasOut:
    spec = _spec(alias.spec)
    assert spec is not None, "a deleted alias has no presentation"
    return AliasOut(
        model=alias.model.name,
        alias=alias.name,
        revision=alias.revision,
        variants=spec.variants,
        shadow=spec.shadow,
        reason=alias.reason,
        updated_at=alias.updated_at,
        updated_by=alias.updated_by,
        rollout=rollout,
    )


def revision_out(revision: AliasRevision) -> AliasRevisionOut:
    spec = _spec(revision.spec)
    return AliasRevisionOut(
        revision=revision.revision,
        action=RevisionAction(revision.action),
        variants=spec.variants if spec else [],
        shadow=spec.shadow if spec else [],
        restored_revision=revision.restored_revision,
        reason=revision.reason,
        created_by=revision.created_by,
        created_at=revision.created_at,
        seq=revision.seq,
    )


def change_out(revision: AliasRevision) -> Change:
    spec = _spec(revision.spec)
    return Change(
        seq=revision.seq,
        model=revision.model_name,
        alias=revision.alias_name,
        revision=revision.revision,
        action=RevisionAction(revision.action),
        deleted=spec is None,
        variants=spec.variants if spec else [],
        shadow=spec.shadow if spec else [],
        created_at=revision.created_at,
        created_by=revision.created_by,
    )


def routing_entry(alias: Alias) -> RoutingEntry:
    spec = _spec(alias.spec)
    assert spec is not None
    return RoutingEntry(
        model=alias.model.name,
        alias=alias.name,
        revision=alias.revision,
        variants=spec.variants,
        shadow=spec.shadow,
        updated_at=alias.updated_at,
    )


def audit_out(event: AuditEvent) -> AuditEventOut:
    return AuditEventOut(
        id=event.id,
        at=event.at,
        actor=event.actor,
        action=event.action,
        model=event.model,
        version=event.version,
        alias=event.alias,
        detail=event.detail,
    )


def replica_out(
    replica: Replica, *, live: bool, within: Collection[str] | None = None
) -> ReplicaOut:
    """The replica's report; with `within` (a token's scope), only what concerns those models."""
    return ReplicaOut(
        replica_id=replica.id,
        live=live,
        last_seen=replica.last_seen,
        position=replica.position,
        serving=[
            ServedAlias.model_validate(s)
            for s in replica.serving
            if within is None or s["model"] in within
        ],
        failures=[
            LoadFailure.model_validate(f)
            for f in replica.failures
            if within is None or f["model"] in within
        ],
    )


def token_out(token: Token) -> TokenOut:
    return TokenOut(
        id=token.id,
        name=token.name,
        role=Role(token.role),
        models=token.models,
        created_at=token.created_at,
        created_by=token.created_by,
        revoked_at=token.revoked_at,
        last_used_at=token.last_used_at,
    )
