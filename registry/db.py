"""Engines and transactions for Postgres (production) and SQLite (embedded).

One transaction per request: `Database.transaction()` commits or rolls back; services and
repositories only flush. Database failures leave here as `DatabaseUnavailable`, never as raw
SQLAlchemy or driver errors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from registry.errors import DatabaseUnavailable, Misconfigured

AfterCommit = Callable[[], None]


class Database:
    """Engine and session factories for one database URL."""

    def __init__(
        self, url: str, *, timeout: float = 3.0, pool_size: int = 10, max_overflow: int = 20
    ) -> None:
        try:
            self.url = make_url(url)
        except ArgumentError as exc:
            # Not echoed: a URL that does not parse may still hold a password.
            raise Misconfigured(
                "the database URL does not parse: it should look like "
                "postgresql+psycopg://user:password@host:5432/berth or sqlite:///path/berth.db"
            ) from exc
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        pool = {"pool_size": pool_size, "max_overflow": max_overflow}
        try:
            self.engine = (
                _sqlite_engine(url, pool)
                if self.is_sqlite
                else _postgres_engine(url, timeout, pool)
            )
        except (ArgumentError, ImportError) as exc:  # an unknown dialect, a missing driver
            shown = self.url.render_as_string(hide_password=True)
            raise Misconfigured(f"the database URL {shown} cannot be used: {exc}") from exc
        # On SQLite a writing transaction starts with BEGIN IMMEDIATE so two writers queue on the
        # busy timeout instead of failing when a read lock upgrades; readers never block in WAL.
        writer = self.engine.execution_options(berth_write=True)
        self._readers = sessionmaker(bind=self.engine, expire_on_commit=False)
        self._writers = sessionmaker(bind=writer, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[Session]:
        """Yield a session whose work commits if the block succeeds and rolls back otherwise.

        Callables appended to `session.info["after_commit"]` run once the commit is durable.
        """
        session = (self._writers if write else self._readers)()
        session.info["after_commit"] = []
        try:
            with translate_errors():
                try:
                    yield session
                    session.commit()
                except BaseException:
                    session.rollback()
                    raise
        finally:
            session.close()
        hooks: list[AfterCommit] = session.info["after_commit"]
        for hook in hooks:
            hook()

    def ping(self) -> None:
        """Raise `DatabaseUnavailable` unless a round trip to the database succeeds."""
        with translate_errors(), self.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")

    def dispose(self) -> None:
        self.engine.dispose()


@contextmanager
def translate_errors() -> Iterator[None]:
    """Turn connection-level database failures into `DatabaseUnavailable` (503)."""
    try:
        yield
    except PoolTimeout as exc:
        raise DatabaseUnavailable("the database connection pool is exhausted") from exc
    except (OperationalError, InterfaceError) as exc:
        raise DatabaseUnavailable(f"the database is unavailable: {_first_line(exc)}") from exc
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise DatabaseUnavailable("the database connection was lost") from exc
        raise


def _first_line(exc: DBAPIError) -> str:
    return str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__


def _postgres_engine(url: str, timeout: float, pool: dict[str, int]) -> Engine:
    lock_timeout_ms = int(max(timeout, 1.0) * 1000) * 5
    return create_engine(
        url,
        pool_pre_ping=True,
        # A request past the pool's bound waits (up to pool_timeout) for a connection rather
        # than opening one: the bound, not the traffic, sets what the registry asks of Postgres.
        **pool,
        pool_timeout=30,
        connect_args={
            "connect_timeout": max(1, round(timeout)),
            # A request never waits on a row lock forever: past this it fails as 503.
            "options": f"-c lock_timeout={lock_timeout_ms}",
            # Notice a dead server on an idle pooled connection within seconds, not hours.
            "keepalives": 1,
            "keepalives_idle": 5,
            "keepalives_interval": 2,
            "keepalives_count": 2,
        },
    )


def _sqlite_engine(url: str, pool: dict[str, int]) -> Engine:
    database = make_url(url).database
    if database and database != ":memory:":
        ensure_directory(Path(database).parent, purpose="the SQLite database's directory")
    engine = create_engine(
        url,
        connect_args={"timeout": 30, "check_same_thread": False},
        **pool,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the sqlite3 module so BEGIN is ours to emit.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get("berth_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def ensure_directory(path: Path, *, purpose: str) -> None:
    """Create `path` (and its parents) unless it exists; `Misconfigured` naming it and `purpose`
    if it cannot be (a file in the way, a read-only or missing mount, no permission)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        # mkdir(exist_ok=True) raises FileExistsError only when something else is at the path.
        reason = "it is not a directory" if isinstance(exc, FileExistsError) else exc.strerror
        raise Misconfigured(f"cannot use {path} as {purpose}: {reason or exc}") from exc
