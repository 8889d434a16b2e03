"""FastAPI dependencies as `Annotated` aliases. Everything hangs off `app.state`, which
`create_app` fills, so there is no import-time global."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from .auth import Principal, authenticate
from .blobs import BlobStore
from .db import Database
from .settings import Settings
from .tuf_repo import TufRepository


def get_db(request: Request) -> Database:
    return request.app.state.db


def get_blobs(request: Request) -> BlobStore:
    return request.app.state.blobs


def get_tuf(request: Request) -> TufRepository:
    return request.app.state.tuf


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_principal(
    db: Annotated[Database, Depends(get_db)],
    authorization: Annotated[str | None, Header(description="`Bearer lpt_…`")] = None,
) -> Principal:
    with db.reader() as session:
        return authenticate(session, authorization)


DbDep = Annotated[Database, Depends(get_db)]
BlobsDep = Annotated[BlobStore, Depends(get_blobs)]
TufDep = Annotated[TufRepository, Depends(get_tuf)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
