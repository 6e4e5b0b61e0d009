"""Apply, revert and inspect the Alembic migrations programmatically.

The migrations ship inside the package (`migrations/`), so an installed Berth can upgrade its
database without a checkout or an `alembic.ini`.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError

import migrations
from registry.db import Database, translate_errors
from registry.errors import Misconfigured


def alembic_config(database: Database) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    config.set_main_option(
        "sqlalchemy.url", database.url.render_as_string(hide_password=False).replace("%", "%%")
    )
    return config


def upgrade(database: Database, revision: str = "head") -> None:
    """Bring the schema up to `revision` (default: the newest)."""
    _run(database, "upgrade", revision)


def downgrade(database: Database, revision: str = "base") -> None:
    _run(database, "downgrade", revision)


def _run(database: Database, direction: str, revision: str) -> None:
    config = alembic_config(database)
    try:
        with translate_errors(), database.engine.begin() as conn:
            config.attributes["connection"] = conn
            getattr(command, direction)(config, revision)
    except CommandError as exc:  # alembic's word for a revision it cannot find or reach
        raise Misconfigured(f"cannot {direction} the database to {revision!r}: {exc}") from exc


def current_revision(database: Database) -> str | None:
    with translate_errors(), database.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision(database: Database) -> str | None:
    return ScriptDirectory.from_config(alembic_config(database)).get_current_head()


def is_up_to_date(database: Database) -> bool:
    return current_revision(database) == head_revision(database)


def require_head(database: Database) -> None:
    """Return if the schema is at this code's head; raise `Misconfigured` naming the command
    that fixes it otherwise (and `DatabaseUnavailable` if the database cannot be asked)."""
    current = current_revision(database)
    head = head_revision(database)
    if current != head:
        raise Misconfigured(
            f"the database schema is at revision {current or 'none'}, this Berth needs {head}: "
            "run `berth db upgrade` (or `python -m registry db upgrade`)"
        )
