"""`patch registry …`: run the server, migrate, and bootstrap accounts, tokens and keys
directly on the database (no server needed)."""

from __future__ import annotations

from pathlib import Path

import click

from llmpatch.cli.output import emit_json, json_option, note
from llmpatch.errors import LLMPatchError

from .settings import DEFAULT_PORT, Settings, default_data_dir

_data_dir = click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                         help="Folder for the SQLite database, blobs and TUF keys.")
_db = click.option("--db", "db_url", default=None, help="SQLAlchemy URL, e.g. `postgresql+psycopg://user@host/db`.")


def _settings(data_dir: Path | None, db_url: str | None, **extra) -> Settings:
    kwargs = dict(extra)
    kwargs["data_dir"] = data_dir or default_data_dir()
    if db_url is not None:
        kwargs["db_url"] = db_url
    return Settings(**kwargs)


def _database(settings: Settings):
    from .db import Database, upgrade

    if settings.is_sqlite:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        upgrade(settings.database_url)
    return Database(settings)


def _fail(exc) -> None:
    raise LLMPatchError(exc.message) from None


@click.group()
def registry():
    """Run and administer a patch registry."""


@registry.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=int, help="uvicorn worker processes.")
@click.option("--access-log/--no-access-log", default=False, show_default=True, help="Log every request (costs ~30% throughput).")
@_data_dir
@_db
def serve(host, port, workers, access_log, data_dir, db_url):
    """Serve the registry API, pages and TUF metadata."""
    import os

    import uvicorn

    settings = _settings(data_dir, db_url)
    note(f"Serving the registry on http://{host}:{port} (data in `{settings.data_dir}`)")
    if workers > 1:
        # Workers import the factory and read settings from the environment.
        os.environ["LLMPATCH_REGISTRY_DATA_DIR"] = str(settings.data_dir)
        os.environ["LLMPATCH_REGISTRY_DB"] = settings.db_url
        from .app import create_app

        create_app(settings)  # migrate and initialise TUF once, before the workers race
        uvicorn.run("llmpatch.registry.app:create_app", factory=True, host=host, port=port, workers=workers,
                    log_level="info", access_log=access_log)
    else:
        from .app import create_app

        uvicorn.run(create_app(settings), host=host, port=port, log_level="info", access_log=access_log)


@registry.command()
@_data_dir
@_db
@json_option
def migrate(data_dir, db_url, as_json):
    """Upgrade the database schema to the newest revision."""
    from .db import current_revision, head_revision, upgrade

    settings = _settings(data_dir, db_url)
    if settings.is_sqlite:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    before = current_revision(settings.database_url)
    upgrade(settings.database_url)
    after = head_revision()
    if as_json:
        emit_json({"from": before, "to": after})
    else:
        note(f"Schema at `{after}`" + ("" if before == after else f" (was `{before or 'empty'}`)"))


@registry.command("refresh-metadata")
@_data_dir
@_db
@json_option
def refresh_metadata(data_dir, db_url, as_json):
    """Re-sign TUF timestamp/snapshot/targets if they are past half their lifetime."""
    from .tuf_repo import TufRepository

    settings = _settings(data_dir, db_url)
    db = _database(settings)
    tuf = TufRepository(settings.tuf_key_dir)
    tuf.initialize(db)
    signed = tuf.refresh(db)
    if as_json:
        emit_json({"signed": signed})
    else:
        note("Re-signed metadata" if signed else "Metadata is fresh; nothing to sign")


@registry.group()
def user():
    """Manage accounts."""


@user.command("create")
@click.argument("name")
@_data_dir
@_db
@json_option
def user_create(name, data_dir, db_url, as_json):
    """Create the account NAME."""
    from sqlalchemy.exc import IntegrityError

    from .auth import create_user
    from .errors import ApiError

    db = _database(_settings(data_dir, db_url))
    try:
        with db.writer() as session:
            row = create_user(session, name)
            user_id = row.id
    except ApiError as exc:
        _fail(exc)
    except IntegrityError:
        raise LLMPatchError(f"user `{name}` already exists") from None
    if as_json:
        emit_json({"id": user_id, "name": name})
    else:
        note(f"Created user `{name}`")


@registry.group()
def token():
    """Manage API tokens."""


@token.command("create")
@click.option("--user", "user_name", required=True)
@click.option("--scope", "scopes", multiple=True, required=True, help="`publish|yank|admin:NAME` (NAME or `*`); repeatable.")
@click.option("--description", default="")
@_data_dir
@_db
@json_option
def token_create(user_name, scopes, description, data_dir, db_url, as_json):
    """Create a token for a user and print it (shown only once)."""
    from sqlalchemy import select

    from .auth import create_token
    from .errors import ApiError
    from .models import User

    db = _database(_settings(data_dir, db_url))
    try:
        with db.writer() as session:
            row = session.execute(select(User).where(User.name == user_name)).scalar_one_or_none()
            if row is None:
                raise LLMPatchError(f"no user `{user_name}`")
            created, secret = create_token(session, row, list(scopes), description)
            token_id, stored = created.id, created.scopes.split()
    except ApiError as exc:
        _fail(exc)
    if as_json:
        emit_json({"id": token_id, "token": secret, "user": user_name, "scopes": stored})
    else:
        note(f"Created token {token_id} for `{user_name}` with scopes {' '.join(stored)}")
        click.echo(secret)


@token.command("revoke")
@click.argument("token_id", type=int)
@_data_dir
@_db
@json_option
def token_revoke(token_id, data_dir, db_url, as_json):
    """Revoke a token by its id."""
    from .models import Token, utcnow

    db = _database(_settings(data_dir, db_url))
    with db.writer() as session:
        row = session.get(Token, token_id)
        if row is None:
            raise LLMPatchError(f"no token {token_id}")
        row.revoked_at = row.revoked_at or utcnow()
    if as_json:
        emit_json({"id": token_id, "revoked": True})
    else:
        note(f"Revoked token {token_id}")


@registry.group()
def key():
    """Manage publisher keys of a patch name."""


@key.command("add")
@click.option("--name", "patch_name", required=True)
@click.argument("pem_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_data_dir
@_db
@json_option
def key_add(patch_name, pem_file, data_dir, db_url, as_json):
    """Register the public key in PEM_FILE for an existing patch name."""
    from .catalog import add_key
    from .errors import ApiError

    db = _database(_settings(data_dir, db_url))
    try:
        with db.writer() as session:
            out = add_key(session, None, patch_name, pem_file.read_text(), actor="cli")
    except ApiError as exc:
        _fail(exc)
    if as_json:
        emit_json(out.model_dump())
    else:
        note(f"Registered key `{out.key_id[:16]}` for `{patch_name}`")


@key.command("revoke")
@click.option("--name", "patch_name", required=True)
@click.argument("key_id")
@_data_dir
@_db
@json_option
def key_revoke(patch_name, key_id, data_dir, db_url, as_json):
    """Revoke a publisher key of a patch name."""
    from .catalog import revoke_key
    from .errors import ApiError

    settings = _settings(data_dir, db_url)
    db = _database(settings)
    tuf = None
    if all((settings.tuf_key_dir / f"{role}.pem").exists() for role in ("root", "targets", "snapshot", "timestamp")):
        from .tuf_repo import TufRepository

        tuf = TufRepository(settings.tuf_key_dir)
        tuf.initialize(db)  # checks the keys are the ones root.json names; if not, it cannot sign
        tuf = tuf if tuf.signers else None
    try:
        with db.writer() as session:
            out = revoke_key(session, None, patch_name, key_id, actor="cli", tuf=tuf)
    except ApiError as exc:
        _fail(exc)
    if as_json:
        emit_json(out.model_dump())
    else:
        note(f"Revoked key `{key_id[:16]}` for `{patch_name}`")


# `patch registry add|list|remove` (the client's registry list) live in the client package.
from llmpatch.client.cli import add_registry_commands  # noqa: E402

add_registry_commands(registry)
