"""`patch install` starts cheaply (benchmarks/client_install.py): the HTTP client makes TLS
state only for https, keeps certificate verification there, and the `patch` process does not
import what the install path never runs (numpy for F32 models, tqdm without a terminal,
trio, httpx's own command line)."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from llmpatch.client import _http

NEVER_ON_THE_INSTALL_PATH = ("numpy", "tqdm", "trio", "rich", "pygments", "httpx._main")


def _context(transport) -> ssl.SSLContext:
    return transport._pool._ssl_context  # httpx.HTTPTransport -> httpcore.ConnectionPool


def test_https_keeps_httpx_default_verification():
    transport = _http.scheme_transport_class()()
    try:
        context = _context(transport.for_scheme("https"))
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
        assert context.cert_store_stats()["x509_ca"] > 0  # the CA bundle httpx loads by default
        assert set(transport.transports) == {"https"}
    finally:
        transport.close()


def test_plain_http_transport_trusts_no_certificate():
    transport = _http.scheme_transport_class()()
    try:
        context = _context(transport.for_scheme("http"))
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
        assert context.cert_store_stats()["x509_ca"] == 0  # if TLS were ever attempted, it would fail closed
        assert transport.for_scheme("http") is transport.for_scheme("http")
    finally:
        transport.close()


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"hello"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def hello_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_client_over_plain_http_makes_no_https_transport(hello_url):
    with _http.new_client(timeout=5) as http:
        assert http.get(hello_url).text == "hello"
        assert set(http._transport.transports) == {"http"}


def test_not_importable_blocks_only_inside_and_only_what_is_not_loaded():
    name = "llmpatch_no_such_module_for_this_test"
    with _http._not_importable((name, "json")):
        with pytest.raises(ImportError):
            __import__(name)
        import json as still_there  # already imported: left alone

        assert still_there is json
    assert name not in sys.modules and sys.modules["json"] is json


def test_lean_process_http_client_skips_unused_modules_and_they_stay_importable(hello_url):
    code = f"""
import json, sys
from llmpatch.client import _http
_http.lean_process()
with _http.new_client(timeout=5) as http:
    assert http.get({hello_url!r}).text == "hello"
loaded = sorted(m for m in {list(NEVER_ON_THE_INSTALL_PATH)!r} if m in sys.modules)
import httpcore._synchronization as sync
import httpx
after = None
try:
    import trio
    after = trio.__name__
except ImportError:
    pass
print(json.dumps({{"loaded": loaded, "httpcore_trio": sync.trio is not None, "httpx_main": httpx.main.__module__, "after": after}}))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["loaded"] == []
    assert report["httpcore_trio"] is False and report["httpx_main"] == "httpx"  # httpx's stub, not httpx._main
    try:
        import trio  # noqa: F401

        assert report["after"] == "trio"  # blocked only while httpcore was imported
    except ImportError:
        assert report["after"] is None


def test_install_command_does_not_import_unused_modules(registry, model_dir, tmp_path):
    """The real `patch install` in a fresh process (the console script's entry point), cold cache."""
    registry.publish("toxicity", "1.2.0", seed=1)
    project = tmp_path / "project"
    project.mkdir()
    modules = tmp_path / "modules.json"
    code = f"""
import json, sys
from llmpatch.cli import patch_entry
sys.argv = ["patch", "install", "toxicity@1.2", "--model", {str(model_dir)!r}, "--project", {str(project)!r}]
try:
    patch_entry()
finally:
    open({str(modules)!r}, "w").write(json.dumps(sorted(sys.modules)))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            cwd=project, env=dict(os.environ))
    assert result.returncode == 0, result.stderr
    assert "+ toxicity 1.2.0" in result.stdout
    loaded = set(json.loads(modules.read_text()))
    assert {"tuf.ngclient", "httpcore", "cryptography"} <= loaded  # it did verify, over HTTP
    assert sorted(loaded & set(NEVER_ON_THE_INSTALL_PATH)) == []
