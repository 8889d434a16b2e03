"""Immutable bytes: blobs by digest, and TUF metadata and targets for `tuf.ngclient`."""

from __future__ import annotations

import re

from typing import Annotated

from fastapi import APIRouter, Header
from fastapi.responses import FileResponse, Response

from . import schemas
from .blobs import HEX64
from .deps import BlobsDep, DbDep
from .errors import not_found

router = APIRouter()

IMMUTABLE = "public, max-age=31536000, immutable"
_VERSIONED = re.compile(r"([1-9][0-9]{0,9})\.(root|snapshot|targets)\.json\Z")
# Target file names under consistent snapshots: `NAME/<sha256>.NAME-VERSION.safetensors[.sig]`.
_TARGET = re.compile(r"[a-z][a-z0-9-]{0,63}/([0-9a-f]{64})\.[A-Za-z0-9.+-]+\Z")


def _blob_response(blobs, sha256: str, if_none_match: str | None = None):
    path = blobs.path(sha256) if HEX64.match(sha256) else None
    if path is None:
        raise not_found(f"no blob `sha256:{sha256[:64]}`")
    headers = {"Cache-Control": IMMUTABLE, "ETag": f'"sha256:{sha256}"'}
    if if_none_match and headers["ETag"] in if_none_match:
        return Response(status_code=304, headers=headers)
    return FileResponse(path, media_type="application/octet-stream", headers=headers)


@router.get("/blobs/sha256/{digest}", responses={404: {"model": schemas.ErrorResponse}},
            response_class=Response, summary="A patch file or signature document by its sha256")
def blob(digest: str, blobs: BlobsDep, if_none_match: Annotated[str | None, Header()] = None):
    return _blob_response(blobs, digest, if_none_match)


@router.get("/tuf/metadata/{filename}", responses={404: {"model": schemas.ErrorResponse}},
            response_class=Response, summary="TUF metadata (`N.root.json`, `timestamp.json`, ...)")
def tuf_metadata(filename: str, db: DbDep):
    from .tuf_repo import TufRepository

    if filename in ("timestamp.json", "root.json"):
        role, version = filename[:-5], None
    elif match := _VERSIONED.match(filename):
        role, version = match.group(2), int(match.group(1))
    else:
        raise not_found(f"no metadata file `{filename[:80]}`")
    with db.reader() as session:
        data = TufRepository.load(session, role, version)
    if data is None:
        raise not_found(f"no metadata file `{filename[:80]}`")
    # timestamp.json changes; versioned files never do.
    cache = "no-cache" if version is None else IMMUTABLE
    return Response(data, media_type="application/json", headers={"Cache-Control": cache})


@router.get("/tuf/targets/{path:path}", responses={404: {"model": schemas.ErrorResponse}},
            response_class=Response, summary="TUF target files, hash-prefixed")
def tuf_target(path: str, blobs: BlobsDep):
    match = _TARGET.match(path)
    if match is None:
        raise not_found(f"no target `{path[:120]}`")
    # The digest in the name fully identifies the bytes; the client checks them against
    # the signed targets metadata, so serving by digest is all the server has to do.
    return _blob_response(blobs, match.group(1))
