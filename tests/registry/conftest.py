"""Fixtures: a real uvicorn server on 127.0.0.1 (ephemeral port) over real SQLite or real
PostgreSQL. PostgreSQL gets one uniquely named database per session, dropped at the end;
tests start from empty tables (TRUNCATE), schema from the migrations."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, func, select, text

from llmpatch.registry import Settings, create_app
from llmpatch.registry.auth import create_token, create_user
from llmpatch.registry.db import upgrade
from llmpatch.registry.models import Base, User
from live_server import LiveServer  # noqa: F401  (re-exported for the test modules)

PG_ADMIN_URL = os.environ.get("LLMPATCH_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def pg_url():
    name = f"llmpatch_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        pytest.fail(f"PostgreSQL at `{PG_ADMIN_URL}` is needed for the registry tests: {exc}")
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    upgrade(url)
    yield url
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _truncate_pg(url: str) -> None:
    engine = create_engine(url)
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory):
    """A migrated SQLite file, copied for each test: migrating takes longer than copying."""
    folder = tmp_path_factory.mktemp("sqlite-template")
    upgrade(f"sqlite:///{folder / 'registry.sqlite3'}")
    return folder / "registry.sqlite3"


def _prepare(kind: str, request, data_dir: Path) -> str:
    if kind == "sqlite":
        data_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(request.getfixturevalue("sqlite_template"), data_dir / "registry.sqlite3")
        return ""  # Settings default: SQLite under the data dir
    url = request.getfixturevalue("pg_url")
    _truncate_pg(url)
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    return _prepare(request.param, request, tmp_path / "registry")




@dataclass
class Registry:
    url: str
    settings: Settings
    client: httpx.Client

    def user(self, name: str, *scopes: str) -> dict:
        """Create a user with one token; return headers for it."""
        with self._db.writer() as session:
            user = session.execute(select(User).where(User.name == name)).scalar_one_or_none()
            if user is None:
                user = create_user(session, name)
            _, secret = create_token(session, user, list(scopes) or ["publish:*", "yank:*", "admin:*"])
        return {"Authorization": f"Bearer {secret}"}

    def state(self) -> dict:
        """Everything a refused request must leave unchanged: row counts, revisions, blobs."""
        from llmpatch.registry import models

        counts = {}
        with self._db.reader() as session:
            for table in Base.metadata.sorted_tables:
                counts[table.name] = session.execute(select(func.count()).select_from(table)).scalar()
            counts["revisions"] = session.execute(select(models.Patch.canonical_name, models.Patch.revision)).all()
            counts["yanked"] = session.execute(select(models.Version.id, models.Version.yanked, models.Version.yank_reason)).all()
            counts["keys_revoked"] = session.execute(select(models.PublisherKey.id, models.PublisherKey.revoked_at)).all()
        blob_root = Path(self.settings.blob_dir) / "sha256"
        counts["blobs"] = sorted(p.name for p in blob_root.rglob("*") if p.is_file())
        return counts


@contextlib.contextmanager
def _running(data_dir: Path, db_url: str):
    settings = Settings(data_dir=data_dir, db_url=db_url, max_body_bytes=1024 * 1024, max_patch_bytes=512 * 1024)
    app = create_app(settings)
    with LiveServer(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        reg = Registry(url=url, settings=settings, client=client)
        reg._db = app.state.db
        yield reg


@pytest.fixture
def registry(db_url, tmp_path):
    with _running(tmp_path / "registry", db_url) as reg:
        yield reg


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def module_registry(request, tmp_path_factory):
    """One server per module, for tests that only compare state before and after."""
    data_dir = tmp_path_factory.mktemp("registry")
    with _running(data_dir, _prepare(request.param, request, data_dir)) as reg:
        yield reg
