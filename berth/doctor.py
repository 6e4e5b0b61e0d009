"""`berth doctor`: the configuration the CLI resolved, and whether each piece answers.

Two vantage points: the registry's own view (`/readyz`: can *it* reach its database and
store), which is what matters for a remote installation, and, when this machine holds the
registry's configuration (`BERTH_DATABASE_URL`, or a local `berth up` data directory), a direct
check of the same database and store from here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from berth.client import Client
from berth.config import ClientSettings, resolve_token
from berth.errors import BerthError


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool | None
    """None: skipped (nothing to check from here)."""
    detail: str


@dataclass
class Report:
    config: list[tuple[str, str]] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return all(c.ok is not False for c in self.checks)

    def add(self, name: str, ok: bool | None, detail: str) -> None:
        self.checks.append(Check(name, ok, detail))

    def as_dict(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "config": dict(self.config),
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks],
        }


def _masked(secret: str) -> str:
    """Only what is not secret: Berth tokens are `berth_` and then 43 random characters, every
    one of them secret; a token of another shape shows nothing at all."""
    from registry.auth import TOKEN_PREFIX

    return TOKEN_PREFIX + "…" if secret.startswith(TOKEN_PREFIX) else "…"


def diagnose(*, url: str | None, token: str | None, serving_url: str | None) -> Report:
    settings = ClientSettings()
    base = url or settings.url
    serving = serving_url or settings.serving_url or base
    resolved = resolve_token(token, settings, base)
    report = Report()
    report.config = [
        (
            "registry URL",
            base + ("" if url else " (BERTH_URL)" if "BERTH_URL" in os.environ else " (default)"),
        ),
        ("serving URL", serving),
        (
            "token",
            f"{_masked(resolved.value)} from {resolved.source}" if resolved.value else "none",
        ),
        ("data dir", str(settings.data_dir.resolve())),
    ]
    with Client(base, token=resolved.value, serving_url=serving, timeout=10) as client:
        _check_registry(client, report)
        if serving != base:
            _check_serving(client, report)
    _check_local(report)
    return report


def _check_registry(client: Client, report: Report) -> None:
    try:
        health = client.ready()
    except BerthError as exc:
        report.add("registry", False, exc.message)
        return
    report.add("registry", True, f"answers at {client.url}")
    for name, state in health.checks.items():
        label = {"database": "registry → database", "artifact_store": "registry → artifact store"}
        report.add(label.get(name, name), state == "ok", state)
    try:
        me = client.whoami()
    except BerthError as exc:
        report.add("token", False, exc.message)
    else:
        report.add("token", True, f"'{me['name']}' with role {me['role']}")
        if version := me.get("registry_version"):
            report.add("registry version", True, f"Berth {version}")


def _check_serving(client: Client, report: Report) -> None:
    try:
        status = client.serving_status()
    except BerthError as exc:
        report.add("serving", False, exc.message)
        return
    loaded = len(status.get("loaded", []))
    report.add("serving", True, f"replica {status.get('replica_id')}, {loaded} versions loaded")


def _check_local(report: Report) -> None:
    from registry.config import RegistrySettings
    from registry.db import Database
    from registry.errors import RegistryError
    from registry.storage import open_store

    settings = RegistrySettings()
    db_url = settings.effective_database_url
    try:
        shown = make_url(db_url).render_as_string(hide_password=True)
    except ArgumentError:
        shown = "(does not parse)"  # not echoed: it may hold a password
    report.config.append(("database", shown))
    report.config.append(("artifact store", settings.effective_artifact_store))
    sqlite_file = (settings.data_dir / "berth.db").resolve()
    if not settings.database_url and not sqlite_file.exists():
        report.add("database (from here)", None, "no local configuration: skipped")
        return
    try:
        database = Database(db_url, timeout=settings.db_timeout_seconds)
    except RegistryError as exc:  # a URL no installed driver speaks: a finding, not a crash
        report.add("database (from here)", False, exc.message)
    else:
        try:
            database.ping()
            report.add("database (from here)", True, "answers")
        except RegistryError as exc:
            report.add("database (from here)", False, exc.message)
        finally:
            database.dispose()
    try:
        open_store(
            settings.effective_artifact_store, timeout=settings.storage_timeout_seconds
        ).check()
        report.add("artifact store (from here)", True, "answers")
    except (RegistryError, ValueError) as exc:  # ValueError: boto3's word for a bad endpoint
        report.add("artifact store (from here)", False, getattr(exc, "message", str(exc)))


def render(report: Report) -> RenderableType:
    config = Table.grid(padding=(0, 2))
    config.add_column(style="bold")
    config.add_column()
    for key, value in report.config:
        config.add_row(key, value)
    checks = Table.grid(padding=(0, 2))
    checks.add_column()
    checks.add_column(style="bold")
    checks.add_column()
    marks = {
        True: Text("ok", style="green"),
        False: Text("FAIL", style="bold red"),
        None: Text("skip", style="dim"),
    }
    for check in report.checks:
        checks.add_row(marks[check.ok], check.name, check.detail)
    verdict = (
        Text("everything answers", style="bold green")
        if report.healthy
        else Text("something is wrong: see FAIL above", style="bold red")
    )
    return Group(
        Text("configuration", style="bold underline"),
        config,
        Text(""),
        Text("checks", style="bold underline"),
        checks,
        Text(""),
        verdict,
    )
