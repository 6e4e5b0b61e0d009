"""The registry's published wire contract.

Serving and the `berth` client import this module and nothing else from `registry`, so it holds
Pydantic models only: no ORM, no FastAPI, no storage.
"""

from __future__ import annotations

import ipaddress
import math
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,127}$"
"""Model and alias names: lowercase, URL- and filesystem-neutral, never a path."""

FILE_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,31}$"
"""Names of a version's files (the multipart part names: `artifact`, `onnx`, ...)."""

SHA256_PATTERN = r"^[0-9a-f]{64}$"


def is_loopback(host: str) -> bool:
    """`host` names this machine only: where a service may run without authentication, and
    where a local token file may be trusted. Here because registry, serving and the client all
    decide it, and this module is the one they share."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


PRIMARY_FILE = "artifact"
"""The multipart part that carries a version's primary artifact."""

ModelNameStr = Annotated[str, Field(pattern=NAME_PATTERN)]
AliasNameStr = Annotated[str, Field(pattern=NAME_PATTERN)]
Sha256Str = Annotated[str, Field(pattern=SHA256_PATTERN)]
VersionNumber = Annotated[int, Field(ge=1, le=2**31 - 1)]
ShortText = Annotated[str, Field(max_length=256)]
Tags = Annotated[
    dict[Annotated[str, Field(min_length=1, max_length=64)], ShortText], Field(max_length=64)
]


class Schema(BaseModel):
    """Base for what clients send: an unknown field is an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


class Response(BaseModel):
    """Base for what the registry answers: readers ignore fields they do not know, so a newer
    registry can add one without breaking serving replicas and clients of the previous release."""

    model_config = ConfigDict(extra="ignore")


class ErrorBody(Response):
    """The one error shape of every Berth endpoint."""

    error: str = Field(description="A stable, semantic error code such as `model_not_found`.")
    message: str = Field(description="A sentence for humans that names the thing involved.")
    detail: Any = None


# --- signatures and examples ----------------------------------------------------------------


class DType(StrEnum):
    bool = "bool"
    int8 = "int8"
    int16 = "int16"
    int32 = "int32"
    int64 = "int64"
    uint8 = "uint8"
    uint16 = "uint16"
    uint32 = "uint32"
    uint64 = "uint64"
    float16 = "float16"
    float32 = "float32"
    float64 = "float64"
    string = "string"


class FeatureSpec(Schema):
    name: Annotated[str, Field(min_length=1, max_length=256)]
    dtype: DType


class OutputSpec(Schema):
    name: Annotated[str, Field(min_length=1, max_length=64)]
    dtype: DType
    shape: list[int] = Field(default_factory=list, max_length=8)


class Signature(Schema):
    """The input schema a version accepts: one column per feature, in order."""

    inputs: list[FeatureSpec] = Field(min_length=1, max_length=100_000)
    named: bool = Field(
        default=False,
        description="True when the names are the estimator's own (`feature_names_in_`), so "
        "records and dataframe bodies are matched by name.",
    )
    outputs: list[OutputSpec] = Field(default_factory=list, max_length=16)

    @field_validator("inputs")
    @classmethod
    def _unique_names(cls, inputs: list[FeatureSpec]) -> list[FeatureSpec]:
        names = [f.name for f in inputs]
        if len(set(names)) != len(names):
            raise ValueError("feature names must be unique")
        return inputs


class Example(Schema):
    """A few input rows and what the model answered for them when it was registered.

    Serving runs these rows after loading a version and compares the outputs before the version
    may take traffic: warm-up and smoke test in one.
    """

    inputs: list[list[Any]] = Field(min_length=1, max_length=1000)
    outputs: dict[Annotated[str, Field(pattern=r"^[a-z_]{1,32}$")], list[Any]] = Field(
        min_length=1, max_length=8
    )
    rtol: float = Field(default=1e-6, ge=0, le=1)
    atol: float = Field(default=1e-9, ge=0, le=1)

    @model_validator(mode="after")
    def _outputs_match_rows(self) -> Example:
        for name, values in self.outputs.items():
            if len(values) != len(self.inputs):
                raise ValueError(
                    f"example output {name!r} has {len(values)} rows, "
                    f"inputs have {len(self.inputs)}"
                )
        return self


class Lineage(Schema):
    git_sha: Annotated[str, Field(pattern=r"^[0-9a-f]{7,64}$")] | None = None
    dataset: ShortText | None = Field(default=None, description="Dataset name or digest.")
    run_url: Annotated[str, Field(max_length=2048)] | None = None
    environment: Tags = Field(
        default_factory=dict, description="Training environment versions: python, sklearn, ..."
    )
    extra: Tags = Field(default_factory=dict)


ParamValue = str | int | float | bool | None


class VersionMetadata(Schema):
    """The optional `metadata` part of an upload."""

    flavor: Annotated[str, Field(pattern=r"^[a-z0-9_]{1,32}$")] = "sklearn"
    signature: Signature | None = None
    example: Example | None = None
    metrics: dict[Annotated[str, Field(min_length=1, max_length=128)], float] = Field(
        default_factory=dict, max_length=256
    )
    params: dict[Annotated[str, Field(min_length=1, max_length=128)], ParamValue] = Field(
        default_factory=dict, max_length=256
    )
    tags: Tags = Field(default_factory=dict)
    description: Annotated[str, Field(max_length=10_000)] = ""
    lineage: Lineage | None = None
    sha256: Sha256Str | None = Field(
        default=None, description="If given, the upload fails unless the artifact has this digest."
    )

    @field_validator("metrics")
    @classmethod
    def _finite_metrics(cls, metrics: dict[str, float]) -> dict[str, float]:
        for key, value in metrics.items():
            if not math.isfinite(value):
                raise ValueError(f"metric {key!r} is not a finite number")
        return metrics

    @field_validator("params")
    @classmethod
    def _short_params(cls, params: dict[str, ParamValue]) -> dict[str, ParamValue]:
        for key, value in params.items():
            if isinstance(value, str) and len(value) > 1024:
                raise ValueError(f"param {key!r} is longer than 1024 characters")
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"param {key!r} is not a finite number")
        return params


# --- models and versions --------------------------------------------------------------------


class ModelCreate(Schema):
    name: ModelNameStr
    description: Annotated[str, Field(max_length=10_000)] = ""
    tags: Tags = Field(default_factory=dict)


class ModelPatch(Schema):
    description: Annotated[str, Field(max_length=10_000)] | None = None
    tags: Tags | None = Field(default=None, description="Replaces the model's tags.")


class ModelOut(Response):
    name: str
    description: str
    tags: dict[str, str]
    latest_version: int = Field(description="Highest version number allocated; 0 if none.")
    created_by: str
    created_at: datetime
    updated_at: datetime


class VersionStatus(StrEnum):
    ready = "ready"
    archived = "archived"


class FileOut(Response):
    name: str = Field(description="The part name it was uploaded under: `artifact`, `onnx`, ...")
    sha256: str
    size: int
    media_type: str


class VersionOut(Response):
    model: str
    version: int
    status: VersionStatus
    flavor: str
    sha256: str = Field(description="Digest of the primary artifact.")
    size: int
    files: list[FileOut]
    signature: Signature | None
    example: Example | None
    metrics: dict[str, float]
    params: dict[str, ParamValue]
    tags: dict[str, str]
    description: str
    lineage: Lineage | None
    created_by: str
    created_at: datetime
    archived_at: datetime | None


class VersionPatch(Schema):
    description: Annotated[str, Field(max_length=10_000)] | None = None
    tags: Tags | None = Field(default=None, description="Replaces the version's tags.")


T = TypeVar("T")


class Page(Schema, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null at end.")


# --- aliases and the change feed ------------------------------------------------------------


class Variant(Schema):
    version: VersionNumber
    weight: int = Field(ge=0, le=1_000_000)


class RoutingSpec(Schema):
    """Where an alias sends traffic: weighted variants plus shadow versions that get copies."""

    variants: list[Variant] = Field(min_length=1, max_length=16)
    shadow: list[VersionNumber] = Field(default_factory=list, max_length=8)

    @model_validator(mode="after")
    def _consistent(self) -> RoutingSpec:
        versions = [v.version for v in self.variants]
        if len(set(versions)) != len(versions):
            raise ValueError("a version may appear only once among the variants")
        if sum(v.weight for v in self.variants) <= 0:
            raise ValueError("at least one variant needs a positive weight")
        if len(set(self.shadow)) != len(self.shadow):
            raise ValueError("a version may appear only once among the shadows")
        if overlap := set(self.shadow) & set(versions):
            raise ValueError(f"versions {sorted(overlap)} are both live variants and shadows")
        return self

    def versions(self) -> set[int]:
        """Every version this spec needs loaded."""
        return {v.version for v in self.variants} | set(self.shadow)


class AliasUpdate(Schema):
    """Body of `PUT .../aliases/{alias}`: one version, or weighted variants."""

    version: VersionNumber | None = None
    variants: list[Variant] | None = None
    shadow: list[VersionNumber] = Field(default_factory=list, max_length=8)
    reason: Annotated[str, Field(max_length=1000)] = ""

    @model_validator(mode="after")
    def _one_target(self) -> AliasUpdate:
        if (self.version is None) == (self.variants is None):
            raise ValueError("give exactly one of `version` or `variants`")
        self.to_spec()  # validates the combination
        return self

    def to_spec(self) -> RoutingSpec:
        variants = self.variants or [Variant(version=self.version or 0, weight=100)]
        return RoutingSpec(variants=variants, shadow=self.shadow)


class RollbackRequest(Schema):
    to_revision: int | None = Field(
        default=None,
        ge=1,
        le=2**31 - 1,
        description="Restore this revision; default: the one before.",
    )
    reason: Annotated[str, Field(max_length=1000)] = ""


class RevisionAction(StrEnum):
    set = "set"
    rollback = "rollback"
    delete = "delete"


class ReplicaRollout(Response):
    replica_id: str
    revision: int | None = Field(description="The alias revision this replica serves.")
    live: bool


class Rollout(Response):
    """Which live serving replicas serve which revision of an alias."""

    revision: int
    converged: bool = Field(description="Every live replica serves `revision`.")
    replicas: list[ReplicaRollout]


class AliasOut(Response):
    model: str
    alias: str
    revision: int
    variants: list[Variant]
    shadow: list[int]
    reason: str
    updated_at: datetime
    updated_by: str
    rollout: Rollout | None = None


class AliasRevisionOut(Response):
    revision: int
    action: RevisionAction
    variants: list[Variant] = Field(description="Empty when the alias was deleted.")
    shadow: list[int]
    restored_revision: int | None = Field(description="For a rollback: the revision it restored.")
    reason: str
    created_by: str
    created_at: datetime
    seq: int = Field(description="Position of this revision in the change feed.")


class Change(Response):
    """One alias revision as the change feed delivers it."""

    seq: int
    model: str
    alias: str
    revision: int
    action: RevisionAction
    deleted: bool
    variants: list[Variant]
    shadow: list[int]
    created_at: datetime
    created_by: str


class ChangesOut(Response):
    changes: list[Change]
    position: int = Field(description="Pass as `after` next time.")
    head: int = Field(
        default=0,
        description="The feed's newest position: `head - position` "
        "is how many changes the reader is behind.",
    )


class RoutingEntry(Response):
    model: str
    alias: str
    revision: int
    variants: list[Variant]
    shadow: list[int]
    updated_at: datetime


class RoutingSnapshot(Response):
    """Every alias's current spec. Apply it, then follow `/changes?after=<position>`."""

    position: int
    aliases: list[RoutingEntry]


# --- serving replicas -----------------------------------------------------------------------


class ServedAlias(Schema):
    model: ModelNameStr
    alias: AliasNameStr
    revision: int = Field(ge=0)


class LoadFailure(Schema):
    model: ModelNameStr
    version: VersionNumber
    stage: Literal["download", "digest", "inspect", "load", "example", "other"]
    message: Annotated[str, Field(max_length=2000)]
    at: datetime


class ReplicaReport(Schema):
    """What a serving replica sends as its heartbeat."""

    position: int = Field(ge=0, le=2**63 - 1, description="The last feed position it has applied.")
    serving: list[ServedAlias] = Field(default_factory=list, max_length=100_000)
    failures: list[LoadFailure] = Field(default_factory=list, max_length=100)
    started_at: datetime | None = None


class ReplicaOut(Response):
    replica_id: str
    live: bool
    last_seen: datetime
    position: int
    serving: list[ServedAlias]
    failures: list[LoadFailure]


# --- audit, gc, tokens ----------------------------------------------------------------------


class AuditEventOut(Response):
    id: int
    at: datetime
    actor: str
    action: str
    model: str | None
    version: int | None
    alias: str | None
    detail: dict[str, Any]


class GcReport(Response):
    deleted_blobs: int
    freed_bytes: int
    aborted_uploads: int
    kept_referenced: int
    kept_young: int


class Role(StrEnum):
    """Roles are ordered: each includes everything the ones before it may do."""

    reader = "reader"
    publisher = "publisher"
    admin = "admin"

    @property
    def rank(self) -> int:
        return _ROLE_RANK[self]


_ROLE_RANK = {Role.reader: 1, Role.publisher: 2, Role.admin: 3}


class TokenCreate(Schema):
    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    role: Role
    models: list[ModelNameStr] | None = Field(
        default=None, max_length=1000, description="Restrict the token to these models."
    )


class TokenOut(Response):
    id: int
    name: str
    role: Role
    models: list[str] | None
    created_at: datetime
    created_by: str
    revoked_at: datetime | None
    last_used_at: datetime | None


class TokenCreated(TokenOut):
    token: str = Field(description="The secret. Shown once; only its hash is stored.")


class Health(Response):
    status: Literal["ok", "degraded"]
    checks: dict[str, str]
