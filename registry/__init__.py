"""The patch registry service: `create_app(settings)` builds the FastAPI application.

Importing this package pulls in neither torch nor the web stack; `create_app` imports what
it needs."""

from .settings import Settings


def create_app(settings: Settings | None = None):
    from .app import create_app as _create_app

    return _create_app(settings)


__all__ = ["Settings", "create_app"]
