"""A malicious mirror on 127.0.0.1: a threaded HTTP server that forwards every request to the
real registry and lets a test substitute, replay, freeze or stretch responses on the wire.

`rules` maps a predicate on the request path to a rewrite `(status, headers, body) -> (status,
headers, body)`; `body` may be bytes or an iterator of chunks (sent close-delimited, without a
Content-Length, so a client cannot know when it ends). `sent` counts body bytes written per path.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import httpx

_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "te", "trailer", "upgrade"}


class Mirror:
    def __init__(self, upstream: str):
        self.upstream = upstream.rstrip("/")
        self.rules: list[tuple[Callable[[str], bool], Callable]] = []
        self.sent: dict[str, int] = {}
        self.paths: list[str] = []
        self.http = httpx.Client(timeout=30)
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _forward(self, method: str):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP | {"host"}}
                upstream = mirror.http.request(method, mirror.upstream + self.path, headers=headers, content=body)
                status, out_headers, content = upstream.status_code, dict(upstream.headers), upstream.content
                path = self.path.split("?", 1)[0]
                mirror.paths.append(path)
                for match, rewrite in list(mirror.rules):
                    if match(path):
                        status, out_headers, content = rewrite(status, out_headers, content)
                self.send_response(status)
                for key, value in out_headers.items():
                    if key.lower() not in _HOP:
                        self.send_header(key, value)
                if isinstance(content, (bytes, bytearray)):
                    self.send_header("Content-Length", str(len(content)))
                    self.end_headers()
                    if method != "HEAD":
                        self.wfile.write(content)
                    mirror.sent[path] = mirror.sent.get(path, 0) + len(content)
                    return
                self.send_header("Connection", "close")  # close-delimited: no declared end
                self.end_headers()
                self.close_connection = True
                try:
                    for chunk in content:
                        self.wfile.write(chunk)
                        mirror.sent[path] = mirror.sent.get(path, 0) + len(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client hung up: what a client should do

            def do_GET(self):
                self._forward("GET")

            def do_HEAD(self):
                self._forward("HEAD")

            def do_POST(self):
                self._forward("POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def on(self, match, rewrite) -> None:
        """`match`: a path suffix (str) or a predicate on the path."""
        predicate = (lambda p, s=match: p.endswith(s)) if isinstance(match, str) else match
        self.rules.append((predicate, rewrite))

    def body(self, match, change: Callable[[bytes], bytes]) -> None:
        """Rewrite only the body of successful responses to `match`."""
        self.on(match, lambda status, headers, body: (status, headers, change(body) if status == 200 else body))

    def serve(self, match, content: bytes, status: int = 200) -> None:
        self.on(match, lambda _s, headers, _b: (status, headers, content))

    def clear(self) -> None:
        self.rules.clear()

    def __enter__(self) -> "Mirror":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.http.close()
