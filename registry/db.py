"""Engines and sessions, and running the Alembic migrations from the installed package.

SQLite: WAL so readers never wait for the writer, a busy timeout, and write transactions
opened with `BEGIN IMMEDIATE` (a separate engine) so two writers queue for the lock instead
of both reading and then deadlocking on the upgrade to a write lock.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

import llmpatch.migrations as _migrations_pkg

from .settings import Settings


def _sqlite_engine(url: str, begin: str) -> Engine:
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves, below
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        connection.exec_driver_sql(begin)

    return engine


class Database:
    def __init__(self, settings: Settings):
        self.url = settings.database_url
        self.is_sqlite = settings.is_sqlite
        if self.is_sqlite:
            Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
            self.read_engine = _sqlite_engine(self.url, "BEGIN")
            self.write_engine = _sqlite_engine(self.url, "BEGIN IMMEDIATE")
        else:
            # Reads run in autocommit: each statement sees committed data, and no BEGIN/ROLLBACK
            # round trips per request (they doubled the index endpoint's latency).
            self.read_engine = create_engine(
                self.url, pool_size=settings.pool_size, max_overflow=settings.pool_size, pool_pre_ping=True,
                isolation_level="AUTOCOMMIT",
            )
            self.write_engine = create_engine(
                self.url, pool_size=settings.pool_size, max_overflow=settings.pool_size, pool_pre_ping=True
            )
        self.on_commit: list = []
        self._read = sessionmaker(self.read_engine, expire_on_commit=False)
        self._write = sessionmaker(self.write_engine, expire_on_commit=False)

    @contextmanager
    def reader(self) -> Iterator[Session]:
        """A session for the read path; it is rolled back, never committed."""
        with self._read() as session:
            try:
                yield session
            finally:
                session.rollback()

    @contextmanager
    def writer(self) -> Iterator[Session]:
        """One transaction: committed if the block succeeds, rolled back otherwise. After a
        commit, `on_commit` hooks get the names in `session.info["changed"]`, so this worker's
        caches see its own writes at once (other workers hear of them by NOTIFY)."""
        with self._write() as session:
            with session.begin():
                yield session
            changed = session.info.pop("changed", set())
        for hook in self.on_commit:
            hook(changed)

    def dispose(self) -> None:
        self.read_engine.dispose()
        if self.write_engine is not self.read_engine:
            self.write_engine.dispose()


def alembic_config(url: str):
    """An Alembic Config built in code: no alembic.ini needed in the working directory."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(_migrations_pkg.__file__).parent))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    from alembic import command

    command.downgrade(alembic_config(url), revision)


def current_revision(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
