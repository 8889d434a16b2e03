"""The client's HTTP connection, cheap to start: `patch install` is a fresh process each time,
and before this module most of its wall time went to imports and TLS setup it did not use.

- No TLS work for `http://` registries. httpx's default transport loads the certifi CA bundle
  into an `SSLContext` when the client is made (~60 ms), whatever the URL. Here a transport
  is made per URL scheme on the first request: `https://` gets httpx's default transport,
  certificate and hostname verification on exactly as before; `http://` gets one whose
  `SSLContext` holds no CA certificates and still requires them, so if it were ever used
  for TLS it would refuse every certificate (fails closed, never `verify=False`).
- In the `patch` process only (`lean_process()`, called by the console scripts), modules the
  client never runs are not imported: httpx's own command line (`httpx._main`: rich, pygments)
  and httpcore's trio support (trio is in the environment for selenium, not for us). httpcore
  and httpx treat them as "not installed", the state they support without those extras; the
  block lasts only for that import, so `import trio` works afterwards. A library user's
  process is left alone: there the client may share httpcore with async code under trio.
"""

from __future__ import annotations

import functools
import sys
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx

_lean = False
UNUSED_BY_THE_CLIENT = ("httpx._main", "trio")


def lean_process() -> None:
    """Mark this process as the `patch` command: skip `UNUSED_BY_THE_CLIENT` on first import."""
    global _lean
    _lean = True


@contextmanager
def _not_importable(names: tuple[str, ...]):
    """`import NAME` raises ImportError inside the block, for NAMEs not imported yet."""
    blocked = [name for name in names if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # the import system's "not found" marker
    try:
        yield
    finally:
        for name in blocked:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


def _import(module: str):
    import importlib

    if not _lean:
        return importlib.import_module(module)
    with _not_importable(UNUSED_BY_THE_CLIENT):
        return importlib.import_module(module)


def import_httpx():
    """`httpx`, without its command-line dependencies in the `patch` process."""
    return sys.modules.get("httpx") or _import("httpx")


def _tls_refusing_context():
    """A TLS context that trusts no certificate (for transports that only speak plain HTTP)."""
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # no CA certificates loaded
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True
    return context


@functools.cache
def scheme_transport_class():
    httpx = import_httpx()

    class SchemeTransport(httpx.BaseTransport):
        """httpx's default transport, made per URL scheme on first use (see the module doc)."""

        def __init__(self):
            self.transports: dict[str, httpx.BaseTransport] = {}

        def for_scheme(self, scheme: str) -> "httpx.BaseTransport":
            transport = self.transports.get(scheme)
            if transport is None:
                _import("httpcore")
                # https (and anything but plain http): httpx's default, verify=True with certifi
                verify = _tls_refusing_context() if scheme == "http" else True
                transport = self.transports[scheme] = httpx.HTTPTransport(verify=verify)
            return transport

        def handle_request(self, request: "httpx.Request") -> "httpx.Response":
            return self.for_scheme(request.url.scheme).handle_request(request)

        def close(self) -> None:
            for transport in self.transports.values():
                transport.close()
            self.transports.clear()

    return SchemeTransport


def new_client(timeout: float = 30.0) -> "httpx.Client":
    """An `httpx.Client` like `httpx.Client(timeout=timeout)`, minus the startup cost."""
    httpx = import_httpx()
    return httpx.Client(timeout=timeout, transport=scheme_transport_class()())
