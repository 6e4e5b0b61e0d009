"""Registry settings: typed, `BERTH_`-prefixed, built by whoever creates the app."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1024 * 1024


class RegistrySettings(BaseSettings):
    """Configuration of the registry service.

    Read from `BERTH_*` variables when constructed with no arguments; tests pass their own values.
    S3 credentials and endpoint come from boto3's own `AWS_*` variables, not from here.
    """

    model_config = SettingsConfigDict(env_prefix="BERTH_", extra="ignore", frozen=True)

    data_dir: Path = Field(
        default=Path("berth-data"),
        description="Where the embedded defaults keep the SQLite file and artifacts.",
    )
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL; `postgresql+psycopg://...` in production. "
        "Empty: a SQLite file in the data directory.",
    )
    artifact_store: str = Field(
        default="",
        description="`s3://bucket/prefix` or `file:///path`. Empty: `artifacts/` in the data dir.",
    )
    max_artifact_bytes: int = Field(
        default=4096 * MiB, ge=1, description="Upper bound on the bytes of one upload's files."
    )
    max_metadata_bytes: int = Field(default=1 * MiB, ge=1024)
    max_request_bytes: int = Field(
        default=1 * MiB,
        ge=1024,
        description="Upper bound on any other request body (the JSON ones); 413 past it.",
    )
    upload_part_bytes: int = Field(
        default=8 * MiB,
        ge=5 * MiB,
        description="Upload buffer and S3 multipart part size; upload memory is about twice it.",
    )
    artifact_redirect: bool = Field(
        default=True,
        description="On S3, answer artifact downloads with a 307 to a presigned URL.",
    )
    presign_seconds: int = Field(default=300, ge=1, le=7 * 24 * 3600)
    database_pool_size: int = Field(
        default=10,
        ge=1,
        le=500,
        description="Database connections one registry process keeps open. With the overflow "
        "and one LISTEN connection, this bounds what each process asks of Postgres, however "
        "many serving replicas call it (serving itself never connects to the database).",
    )
    database_max_overflow: int = Field(
        default=20,
        ge=0,
        le=500,
        description="Extra connections opened under bursts and closed after; 0 makes the "
        "pool size a hard cap (requests then wait for a free connection).",
    )
    db_timeout_seconds: float = Field(
        default=3.0, gt=0, description="Connect and lock-wait bound; past it: 503, never a hang."
    )
    storage_timeout_seconds: float = Field(default=5.0, gt=0)
    feed_poll_seconds: float = Field(
        default=1.0, gt=0, description="Fallback poll of the change feed when no wake-up arrives."
    )
    feed_max_wait_seconds: float = Field(default=60.0, gt=0)
    replica_ttl_seconds: float = Field(
        default=15.0, gt=0, description="A replica silent for longer is no longer live."
    )
    gc_grace_seconds: float = Field(
        default=3600.0,
        ge=0,
        description="Unreferenced objects younger than this are kept (uploads in flight).",
    )
    auto_migrate: bool = Field(
        default=False, description="Apply pending migrations at start (the embedded default does)."
    )
    auth: bool = Field(default=True, description="Require bearer tokens. Off only on loopback.")
    token_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        description="How long a checked token is trusted without asking the database; a token "
        "revoked through another process keeps working for at most this long (0: ask every time).",
    )
    allow_insecure: bool = Field(
        default=False, description="Allow auth off on a non-loopback address. Do not."
    )

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'berth.db').resolve()}"

    @property
    def effective_artifact_store(self) -> str:
        if self.artifact_store:
            return self.artifact_store
        return (self.data_dir / "artifacts").resolve().as_uri()
