"""JSON API under /api/v1. Reads never write; every write is one transaction."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import exists, select

from . import schemas
from .auth import create_token, parse_scopes
from .catalog import add_key, get_patch, iso, key_out, revoke_key, set_deprecated, set_yanked
from .deps import BlobsDep, DbDep, PrincipalDep, SettingsDep, TufDep
from .errors import ApiError, bad_request, forbidden, not_found
from .models import AuditEvent, Patch, PublisherKey, Token, User, Version, VersionDomain
from .fastpath import index_lookup
from .publish import publish

router = APIRouter(prefix="/api/v1")

ERRORS = {code: {"model": schemas.ErrorResponse} for code in (400, 401, 403, 404, 409, 413, 422)}

_PUBLISH_BODY = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object",
            "required": ["file", "signature"],
            "properties": {
                "file": {"type": "string", "format": "binary", "description": "the patch `.safetensors` file"},
                "signature": {"type": "string", "format": "binary", "description": "detached signature document (JSON)"},
                "public_key": {"type": "string", "format": "binary", "description": "Ed25519 public key PEM; needed to claim a new name"},
            },
        }}},
    }
}


async def _part(form, name: str, required: bool) -> bytes | None:
    value = form.get(name)
    if value is None:
        if required:
            raise bad_request("malformed_request", f"multipart part `{name}` is missing")
        return None
    if isinstance(value, str):
        return value.encode()
    return await value.read()


@router.post("/patches", status_code=201, response_model=schemas.PublishOut, responses=ERRORS,
             openapi_extra=_PUBLISH_BODY, summary="Publish a signed patch version")
async def publish_patch(request: Request, response: Response, principal: PrincipalDep, db: DbDep,
                        blobs: BlobsDep, tuf: TufDep, settings: SettingsDep):
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise bad_request("malformed_request", "publish needs a `multipart/form-data` body with `file` and `signature` parts")
    try:
        form = await request.form(max_files=8, max_fields=8, max_part_size=settings.max_body_bytes)
    except ApiError:
        raise
    except Exception as exc:  # starlette turns multipart syntax errors into HTTPException(400)
        if exc.__class__.__name__ == "BodyTooLarge":
            raise
        detail = getattr(exc, "detail", None) or str(exc) or exc.__class__.__name__
        raise bad_request("malformed_request", f"multipart body could not be parsed: {str(detail).rstrip('.')}") from None
    try:
        unknown = sorted(set(form.keys()) - {"file", "signature", "public_key"})
        if unknown:
            raise bad_request("malformed_request", f"unknown multipart parts: {', '.join(unknown)}")
        data = await _part(form, "file", True)
        signature = await _part(form, "signature", True)
        public_key = await _part(form, "public_key", False)
    finally:
        await form.close()
    out = await run_in_threadpool(publish, db, blobs, tuf, principal, data, signature, public_key, settings.max_patch_bytes)
    if not out.created:
        response.status_code = 200
    return out


@router.get("/patches/{name}", response_model=schemas.IndexOut, responses={404: {"model": schemas.ErrorResponse}},
            summary="The index document of one patch")
async def patch_index(name: str, request: Request, db: DbDep):
    # Normally answered by `fastpath.IndexFastPath` before FastAPI routing; same logic.
    status, body, headers = index_lookup(db, name, request.app.state.index_cache)
    if status == 200 and headers["etag"] in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers={"ETag": headers["etag"], "Cache-Control": headers["cache-control"]})
    return Response(body, status_code=status, headers=headers)


@router.get("/patches", response_model=schemas.SearchOut, summary="Search patches")
def search(db: DbDep,
           q: Annotated[str | None, Query(max_length=64, description="substring of the name")] = None,
           domain: Annotated[str | None, Query(max_length=64)] = None,
           base_model: Annotated[str | None, Query(max_length=71, description="architecture or weights fingerprint")] = None,
           limit: Annotated[int, Query(ge=1, le=200)] = 50):
    query = select(Patch).order_by(Patch.canonical_name).limit(limit)
    if q:
        query = query.where(Patch.canonical_name.contains(q.lower().replace("_", "-"), autoescape=True))
    if domain:
        query = query.where(exists(select(VersionDomain.version_id).join(Version, Version.id == VersionDomain.version_id)
                                   .where(Version.patch_id == Patch.id, VersionDomain.domain == domain.lower())))
    if base_model:
        query = query.where(exists(select(Version.id).where(
            Version.patch_id == Patch.id, (Version.base_architecture == base_model) | (Version.base_weights == base_model))))
    with db.reader() as session:
        patches = session.execute(query).scalars().all()
        return schemas.SearchOut(results=[search_result(p) for p in patches])


def search_result(patch: Patch) -> schemas.SearchResult:
    import semver

    index = json.loads(patch.index_json)
    live = [v for v in index["versions"] if not v["yanked"]]
    latest = max(live, key=lambda v: semver.Version.parse(v["version"]))["version"] if live else None
    domains = sorted({d for v in index["versions"] for d in v["domains"]})
    base_models = sorted({v["base_model"]["architecture"] for v in index["versions"]})
    return schemas.SearchResult(name=patch.canonical_name, latest_version=latest, description=patch.description,
                                domains=domains, base_models=base_models, deprecated=patch.deprecated,
                                updated_at=iso(patch.updated_at))


@router.get("/patches/{name}/keys", response_model=schemas.KeysOut, responses=ERRORS)
def list_keys(name: str, db: DbDep):
    with db.reader() as session:
        patch = get_patch(session, name)
        rows = session.execute(select(PublisherKey).where(PublisherKey.patch_id == patch.id).order_by(PublisherKey.id)).scalars()
        return schemas.KeysOut(keys=[key_out(r) for r in rows])


@router.post("/patches/{name}/keys", status_code=201, response_model=schemas.KeyOut, responses=ERRORS)
def register_key(name: str, body: schemas.KeyIn, principal: PrincipalDep, db: DbDep):
    with db.writer() as session:
        return add_key(session, principal, name, body.public_key_pem)


@router.post("/patches/{name}/keys/{key_id}/revoke", response_model=schemas.KeyOut, responses=ERRORS)
def revoke_publisher_key(name: str, key_id: str, principal: PrincipalDep, db: DbDep, tuf: TufDep):
    with db.writer() as session:
        return revoke_key(session, principal, name, key_id, tuf=tuf)


@router.get("/patches/{name}/audit", response_model=schemas.AuditOut, responses=ERRORS)
def audit_log(name: str, db: DbDep):
    with db.reader() as session:
        patch = get_patch(session, name)
        rows = session.execute(select(AuditEvent).where(AuditEvent.patch_name == patch.canonical_name).order_by(AuditEvent.id)).scalars()
        return schemas.AuditOut(events=[
            schemas.AuditEventOut(id=r.id, at=iso(r.at), actor=r.actor, action=r.action, version=r.version, detail=json.loads(r.detail))
            for r in rows])


@router.post("/patches/{name}/versions/{version}/yank", response_model=schemas.VersionOut, responses=ERRORS)
def yank(name: str, version: str, body: schemas.YankIn, principal: PrincipalDep, db: DbDep, tuf: TufDep):
    with db.writer() as session:
        return set_yanked(session, tuf, principal, name, version, body.reason)


@router.post("/patches/{name}/versions/{version}/unyank", response_model=schemas.VersionOut, responses=ERRORS)
def unyank(name: str, version: str, principal: PrincipalDep, db: DbDep, tuf: TufDep,
           body: schemas.UnyankIn | None = None):
    with db.writer() as session:
        return set_yanked(session, tuf, principal, name, version, None)


@router.post("/patches/{name}/deprecate", response_model=schemas.DeprecateOut, responses=ERRORS)
def deprecate(name: str, body: schemas.DeprecateIn, principal: PrincipalDep, db: DbDep):
    with db.writer() as session:
        return set_deprecated(session, principal, name, body.message)


@router.get("/me", response_model=schemas.MeOut, responses=ERRORS)
def me(principal: PrincipalDep):
    return schemas.MeOut(user=principal.user, token_id=principal.token_id, scopes=list(principal.scopes))


def _token_out(row: Token) -> schemas.TokenOut:
    return schemas.TokenOut(id=row.id, description=row.description, scopes=row.scopes.split(),
                            created_at=iso(row.created_at), revoked_at=iso(row.revoked_at))


@router.get("/tokens", response_model=schemas.TokensOut, responses=ERRORS)
def list_tokens(principal: PrincipalDep, db: DbDep):
    with db.reader() as session:
        rows = session.execute(select(Token).where(Token.user_id == principal.user_id).order_by(Token.id)).scalars()
        return schemas.TokensOut(tokens=[_token_out(r) for r in rows])


@router.post("/tokens", status_code=201, response_model=schemas.NewTokenOut, responses=ERRORS)
def new_token(body: schemas.TokenIn, principal: PrincipalDep, db: DbDep):
    scopes = parse_scopes(body.scopes)
    missing = [s for s in scopes if not principal.covers(s)]
    if missing:
        raise forbidden(f"your token cannot grant scopes it does not hold: {', '.join(missing)}")
    with db.writer() as session:
        user = session.get(User, principal.user_id)
        token, secret = create_token(session, user, scopes, body.description)
        return schemas.NewTokenOut(id=token.id, token=secret, scopes=scopes)


@router.delete("/tokens/{token_id}", response_model=schemas.TokenOut, responses=ERRORS)
def delete_token(token_id: int, principal: PrincipalDep, db: DbDep):
    from .models import utcnow

    with db.writer() as session:
        row = session.get(Token, token_id)
        if row is None or row.user_id != principal.user_id:
            raise not_found(f"no token {token_id} of user `{principal.user}`")
        if row.revoked_at is None:
            row.revoked_at = utcnow()
        return _token_out(row)
