"""Tokens an installation needs before anyone can call it: the first admin, serving's reader.

These work straight on the database, like `berth db upgrade`: they are how an installation gets
its first credentials, before the API can check any.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from berth.config import ADMIN_TOKEN_FILE, SERVING_TOKEN_FILE
from registry import auth
from registry.db import Database, ensure_directory
from registry.errors import RegistryError
from registry.schemas import Role, TokenCreate


def write_secret(path: Path, secret: str) -> None:
    """Write a secret to a file only its owner can read (0600 from creation)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret + "\n")
    os.chmod(path, 0o600)  # O_CREAT's mode does not apply to a file that existed


def serving_token(database: Database, path: Path) -> str:
    """The reader token serving uses: the one in `path` while it is valid, else a new one."""
    if path.is_file():
        secret = path.read_text().strip()
        try:
            if secret and auth.authenticate(database, secret).role == Role.reader:
                return secret
        except RegistryError:
            pass  # revoked, or from another database: replaced below
    with database.transaction() as session:
        _, secret = auth.create_token(
            session, TokenCreate(name="serving", role=Role.reader), created_by="berth:bootstrap"
        )
    write_secret(path, secret)
    return secret


@dataclass(frozen=True, slots=True)
class Bootstrapped:
    admin_path: Path
    admin_created: bool
    serving_path: Path
    serving_token: str


def bootstrap(database: Database, directory: Path) -> Bootstrapped:
    """On a first start, the admin token; always, a valid serving token. Both 0600 files.

    The admin comes first: `bootstrap_admin_token` creates one only while no token exists.
    """
    ensure_directory(directory, purpose="the token directory")
    admin = directory / ADMIN_TOKEN_FILE
    created = auth.bootstrap_admin_token(database, admin) is not None
    serving = directory / SERVING_TOKEN_FILE
    return Bootstrapped(admin, created, serving, serving_token(database, serving))
