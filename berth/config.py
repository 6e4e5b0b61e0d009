"""What the CLI and the client read from the environment, and where a local token is found."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from berth.client import DEFAULT_URL
from registry.schemas import is_loopback

ADMIN_TOKEN_FILE = "admin-token"  # noqa: S105 - a file name, not a secret
"""Where `berth up` writes the first admin token, inside its data directory."""

SERVING_TOKEN_FILE = "serving-token"  # noqa: S105 - a file name, not a secret
"""Where `berth up` keeps the reader token its serving half uses to talk to the registry."""


class ClientSettings(BaseSettings):
    """Configuration of the `berth` CLI; every option it has wins over these."""

    model_config = SettingsConfigDict(env_prefix="BERTH_", extra="ignore", frozen=True)

    url: str = Field(default=DEFAULT_URL, description="The registry (and `berth up`) the CLI uses.")
    token: SecretStr | None = Field(
        default=None,
        description="Bearer token of the CLI. Unset against a local `berth up`: the data "
        "directory's `admin-token` is used.",
    )
    serving_url: str | None = Field(
        default=None, description="Where `berth predict` sends requests. Unset: the `BERTH_URL`."
    )
    data_dir: Path = Field(
        default=Path("berth-data"),
        description="Where the embedded defaults keep the SQLite file, artifacts and tokens.",
    )
    timeout_seconds: float = Field(default=30.0, gt=0, description="HTTP timeout of the CLI.")


def is_local(url: str) -> bool:
    """The URL names this machine (loopback), where `berth up`'s token file can be trusted."""
    try:
        host = urlsplit(url).hostname
    except ValueError:  # names no machine; the client says what is wrong with it
        return False
    return is_loopback(host or "")


@dataclass(frozen=True, slots=True)
class ResolvedToken:
    value: str | None
    source: str
    """Where it came from, for `berth doctor`: an option, the environment, a file, or nowhere."""


def resolve_token(option: str | None, settings: ClientSettings, url: str) -> ResolvedToken:
    """`--token`, else `BERTH_TOKEN`, else the local instance's admin-token file."""
    if option:
        return ResolvedToken(option, "--token")
    if settings.token is not None and settings.token.get_secret_value():
        return ResolvedToken(settings.token.get_secret_value(), "BERTH_TOKEN")
    path = settings.data_dir / ADMIN_TOKEN_FILE
    if is_local(url) and path.is_file():
        try:
            secret = path.read_text().strip()
        except OSError:
            secret = ""
        if secret:
            return ResolvedToken(secret, str(path))
    return ResolvedToken(None, "none")
