"""Serving settings: typed, `BERTH_`-prefixed, built by whoever creates the app."""

from __future__ import annotations

import os
import re
import secrets
import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from registry.schemas import NAME_PATTERN

MiB = 1024 * 1024


REPLICA_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
"""What the registry accepts in `PUT /replicas/{replica_id}`."""


def default_replica_id() -> str:
    """An id unique per process: replicas on one host, or one restarted, never share it."""
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname()).strip("-.") or "serving"
    return f"{host[:100]}-{os.getpid()}-{secrets.token_hex(3)}"


class ServingSettings(BaseSettings):
    """Configuration of one serving replica.

    Read from `BERTH_*` variables when constructed with no arguments; tests pass their own values.
    """

    model_config = SettingsConfigDict(env_prefix="BERTH_", extra="ignore", frozen=True)

    registry_url: str = Field(
        default="http://127.0.0.1:8000", description="Base URL of the registry (without /api/v1)."
    )
    registry_token: SecretStr | None = Field(
        default=None, description="Bearer token for the registry; a `reader` token is enough."
    )
    registry_token_file: Path | None = Field(
        default=None,
        description="A file holding that token (a mounted Secret), read at start; an "
        "alternative to `BERTH_REGISTRY_TOKEN` that keeps the token out of the environment.",
    )
    default_alias: str = Field(
        default="production",
        pattern=NAME_PATTERN,
        description="The alias `POST /models/{name}/predict` routes through.",
    )
    default_model: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        description="The model MLflow's `POST /invocations` scores (through the default alias), "
        "so MLflow's own scoring client works against a Berth model unchanged.",
    )
    log_format: Literal["json", "text"] = Field(
        default="json",
        description="`python -m serving` logs one JSON object per line (with the request id, "
        "model, version and alias of each predict), or text for a terminal.",
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        default="info", description="`python -m serving --log-level` overrides it."
    )
    access_log: bool = Field(
        default=True, description="One log line per predict, whichever protocol it came by."
    )
    serving_max_models: int = Field(
        default=16,
        ge=1,
        description="How many versions loaded for pinned requests only (behind no alias) stay "
        "in memory; the least recently used beyond this are dropped.",
    )
    replica_id: str = Field(default_factory=default_replica_id, pattern=REPLICA_ID_PATTERN)
    heartbeat_seconds: float = Field(
        default=3.0, gt=0, description="Interval of the replica report; also sent after each swap."
    )
    feed_wait_seconds: float = Field(
        default=30.0, gt=0, le=60, description="Long-poll wait of the change feed."
    )
    feed_limit: int = Field(default=500, ge=1, le=10_000)
    backoff_min_seconds: float = Field(default=0.2, gt=0)
    backoff_max_seconds: float = Field(default=10.0, gt=0)
    failed_retry_seconds: float = Field(
        default=300.0,
        gt=0,
        description="When to try again a version whose digest, load or example failed, for an "
        "alias or a pinned request alike. Versions "
        "are immutable, so this only helps after an operator repaired the store.",
    )
    registry_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="Connect and read bound of every registry call but the feed.",
    )
    load_timeout_seconds: float = Field(
        default=300.0, gt=0, description="Download plus deserialise plus example, per version."
    )
    load_concurrency: int = Field(default=2, ge=1, le=64)
    download_dir: Path | None = Field(
        default=None, description="Where artifacts are staged while hashed. Default: system temp."
    )
    max_predict_bytes: int = Field(
        default=32 * MiB,
        ge=1024,
        description="Upper bound on a predict request body; 413 past it. (The registry's "
        "`BERTH_MAX_REQUEST_BYTES` bounds its own JSON bodies: one variable, two meanings, was "
        "a trap for a shared ConfigMap.)",
    )
    inline_predict_max_seconds: float = Field(
        default=0.001,
        ge=0,
        description="A version whose one-row predict (timed at warm-up) is faster than this "
        "predicts on the event loop: a thread hop costs about 0.1 ms, more than a linear model.",
    )
    inline_predict_max_rows: int = Field(default=64, ge=0)
    batching: bool = Field(
        default=True,
        description="Predict concurrent requests for one version in one model call (models "
        "predicted in a worker thread only). A lone request is never held back.",
    )
    batch_max_rows: int = Field(
        default=64, ge=1, description="Rows one batched model call takes at most."
    )
    batch_max_wait_ms: float = Field(
        default=2.0,
        ge=0,
        description="Longest a request queued behind a running call waits before a second "
        "call starts alongside it.",
    )
    onnx: bool = Field(
        default=True,
        description="Predict with onnxruntime when a version carries an `onnx` rendition that "
        "reproduces the version's stored example; scikit-learn otherwise.",
    )
    shadow_max_in_flight: int = Field(
        default=64, ge=0, description="Shadow copies beyond this are dropped, and counted."
    )
    auth: bool = Field(
        default=True,
        description="Require a registry token (reader or better) on predict and /status. Off "
        "only on loopback.",
    )
    allow_insecure: bool = Field(
        default=False, description="Allow auth off on a non-loopback address. Do not."
    )
    anonymous_predict: bool = Field(
        default=False, description="Let predict skip authentication (the rest still needs it)."
    )
    token_cache_seconds: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="How long the registry's word on a token is reused: a revoked token keeps "
        "working on a replica for at most this long.",
    )
    load_isolation: bool = Field(
        default=True,
        description="Load each new version first in a child process with no credentials and "
        "the limits below; only a version that loads there is loaded here.",
    )
    load_memory_bytes: int = Field(
        default=4096 * MiB,
        ge=64 * MiB,
        description="Memory that child may map to load a model (beyond the libraries it starts "
        "with): a model that needs more is refused.",
    )
    load_cpu_seconds: int = Field(
        default=120, ge=1, description="CPU-time limit of that child: a load that spins is killed."
    )
    shadow_rtol: float = Field(default=1e-6, ge=0)
    shadow_atol: float = Field(default=1e-9, ge=0)
    shutdown_delay_seconds: float = Field(
        default=0.0,
        ge=0,
        le=300,
        description="After SIGTERM, how long `/readyz` answers 503 while requests are still "
        "served, so load balancers stop sending new ones before the listener closes. 0 stops at "
        "once (a single machine); the Kubernetes manifests set 5.",
    )
    shutdown_drain_seconds: float = Field(
        default=20.0,
        gt=0,
        le=600,
        description="Then how long requests in flight may take to finish before they are "
        "cancelled. Keep delay plus drain below the pod's `terminationGracePeriodSeconds`.",
    )

    @model_validator(mode="after")
    def _ordered_backoff(self) -> ServingSettings:
        if self.backoff_min_seconds > self.backoff_max_seconds:
            raise ValueError("backoff_min_seconds must not exceed backoff_max_seconds")
        return self

    @model_validator(mode="after")
    def _one_token_source(self) -> ServingSettings:
        if self.registry_token is not None and self.registry_token_file is not None:
            raise ValueError("set BERTH_REGISTRY_TOKEN or BERTH_REGISTRY_TOKEN_FILE, not both")
        return self

    def bearer_token(self) -> str | None:
        """The registry token, from the variable or the file; ValueError if the file is unusable."""
        if self.registry_token is not None:
            return self.registry_token.get_secret_value()
        if self.registry_token_file is None:
            return None
        try:
            token = self.registry_token_file.read_text().strip()
        except OSError as exc:
            raise ValueError(
                f"cannot read BERTH_REGISTRY_TOKEN_FILE {self.registry_token_file}: "
                f"{exc.strerror or exc}"
            ) from None
        if not token:
            raise ValueError(f"BERTH_REGISTRY_TOKEN_FILE {self.registry_token_file} is empty")
        return token

    @property
    def api_url(self) -> str:
        return self.registry_url.rstrip("/") + "/api/v1"
