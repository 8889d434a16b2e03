"""`create_app(settings)`: builds the database, blob store, TUF repository and routes.
Nothing is created at import time, so tests and workers each get their own app."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from .blobs import LocalBlobStore
from .db import Database, upgrade
from .errors import ApiError
from .fastpath import IndexFastPath
from .index_cache import IndexCache
from .limits import BodyLimitMiddleware, BodyTooLarge
from .settings import Settings
from .tuf_repo import TufRepository

log = logging.getLogger(__name__)

_HTTP_CODES = {400: "malformed_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 413: "payload_too_large"}


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError):
        return error_response(exc.status, exc.code, exc.message)

    @app.exception_handler(BodyTooLarge)
    async def body_too_large(_request: Request, exc: BodyTooLarge):
        response = error_response(413, "payload_too_large", str(exc))
        response.headers["Connection"] = "close"
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError):
        parts = []
        for err in exc.errors()[:5]:
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
            parts.append(f"`{where}`: {err.get('msg', 'invalid')}")
        if any(err.get("type") == "json_invalid" for err in exc.errors()):
            return error_response(400, "malformed_request", "request body is not valid JSON")
        return error_response(422, "validation_error", "; ".join(parts))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException):
        return error_response(exc.status_code, _HTTP_CODES.get(exc.status_code, "http_error"), str(exc.detail))



class InternalErrors:
    """Turn an unexpected exception into a JSON 500 and keep the connection healthy.
    (Starlette's `exception_handler(Exception)` re-raises after responding, which makes the
    server drop the connection, sometimes before the response is flushed.)"""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("unhandled error")
            if started:
                raise
            response = error_response(500, "internal_error", "internal server error")
            await response(scope, receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    if settings.should_migrate:
        if settings.is_sqlite:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        upgrade(settings.database_url)
    db = Database(settings)
    tuf = TufRepository(settings.tuf_key_dir, signing=settings.signing)
    tuf.initialize(db)

    cache = None
    if not db.is_sqlite and settings.index_cache:
        cache = IndexCache(db.read_engine.url.set(drivername="postgresql").render_as_string(hide_password=False))
        db.on_commit.append(cache.invalidate_many)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        task = asyncio.create_task(_refresh_loop(tuf, db, settings.tuf_refresh_interval)) if tuf.signers else None
        if cache is not None:
            cache.start()
        try:
            yield
        finally:
            if task:
                task.cancel()
            if cache is not None:
                await asyncio.to_thread(cache.stop)
            db.dispose()

    app = FastAPI(title="llm-patch registry", version=__version__, lifespan=lifespan,
                  description="Signed, versioned LLM safety patches. See docs/registry.md.")
    app.state.settings = settings
    app.state.db = db
    app.state.blobs = LocalBlobStore(settings.blob_dir)
    app.state.tuf = tuf
    app.add_middleware(InternalErrors)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    app.state.index_cache = cache
    app.add_middleware(IndexFastPath, db=db, cache=cache)  # added last = outermost: skips the stack below
    _install_error_handlers(app)

    from . import pages, routes_api, routes_files

    app.include_router(routes_api.router)
    app.include_router(routes_files.router)
    app.include_router(pages.router)

    @app.get("/api/v1/health", summary="Liveness and the schema revision")
    def health():
        return {"status": "ok", "version": __version__}

    return app


async def _refresh_loop(tuf: TufRepository, db: Database, interval: float) -> None:
    """Keep timestamp/snapshot/targets from expiring on a quiet registry."""
    while True:
        try:
            await asyncio.to_thread(tuf.refresh, db)
        except Exception:  # keep serving; the next round retries
            log.exception("TUF metadata refresh failed")
        await asyncio.sleep(interval)
