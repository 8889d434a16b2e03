"""Alembic runs from the installed package (no alembic.ini in the working directory):
empty -> head -> base -> head, on SQLite and PostgreSQL, and the result matches the models."""

from __future__ import annotations

import uuid

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from llmpatch.registry.db import current_revision, downgrade, head_revision, upgrade
from llmpatch.registry.models import Base

from .conftest import PG_ADMIN_URL


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db(request, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # prove no alembic.ini is needed in cwd
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'm.sqlite3'}"
        return
    name = f"llmpatch_mig_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def _diff(url: str) -> list:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return compare_metadata(MigrationContext.configure(connection), Base.metadata)
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade(empty_db):
    assert current_revision(empty_db) is None
    upgrade(empty_db)
    assert current_revision(empty_db) == head_revision()
    assert _tables(empty_db) == set(Base.metadata.tables)
    assert _diff(empty_db) == []  # migrations and models agree

    downgrade(empty_db, "base")
    assert current_revision(empty_db) is None and _tables(empty_db) == set()

    upgrade(empty_db)
    assert current_revision(empty_db) == head_revision() and _diff(empty_db) == []
    upgrade(empty_db)  # idempotent at head


def test_sqlite_upgrades_itself_on_start(tmp_path):
    from llmpatch.registry import Settings, create_app

    create_app(Settings(data_dir=tmp_path / "r"))
    assert current_revision(f"sqlite:///{tmp_path / 'r' / 'registry.sqlite3'}") == head_revision()


def test_upgrade_from_the_first_revision_keeps_data_and_adds_audit_triggers(empty_db):
    """An earlier schema with rows in it upgrades in place; the audit log is then append-only."""
    import sqlalchemy.exc

    upgrade(empty_db, "0001")
    engine = create_engine(empty_db)
    try:
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO audit_events (at, actor, action, detail) VALUES (CURRENT_TIMESTAMP, 'cli', 'claim', '{}')"))
        upgrade(empty_db)
        assert current_revision(empty_db) == head_revision()
        with engine.begin() as connection:
            assert connection.execute(text("SELECT actor FROM audit_events")).scalar() == "cli"
        for statement in ("UPDATE audit_events SET actor = 'mallory'", "DELETE FROM audit_events"):
            with pytest.raises(sqlalchemy.exc.DatabaseError, match="audit_events is append-only"):
                with engine.begin() as connection:
                    connection.execute(text(statement))
        with engine.begin() as connection:
            assert connection.execute(text("SELECT actor FROM audit_events")).scalar() == "cli"
    finally:
        engine.dispose()
