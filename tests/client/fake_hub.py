"""A fake Hugging Face Hub on 127.0.0.1: the few endpoints `huggingface_hub` calls to create a
repo, commit small files (the "regular" upload mode, base64 in the commit body) and download
them by revision. Repos live in memory as a list of commits, each a full snapshot."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse


class FakeHub:
    def __init__(self):
        self.repos: dict[str, list[tuple[str, dict[str, bytes]]]] = {}  # repo -> [(commit, files)]
        self.requests: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status, body=b"", headers=None, head=False):
                if isinstance(body, (dict, list)):
                    body = json.dumps(body).encode()
                    headers = {"Content-Type": "application/json", **(headers or {})}
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def do_POST(self):
                path = urlparse(self.path).path
                hub.requests.append(f"POST {path}")
                body = self._body()
                if path == "/api/repos/create":
                    data = json.loads(body)
                    repo = f"{data['organization']}/{data['name']}" if data.get("organization") else data["name"]
                    hub.repos.setdefault(repo, [("0" * 40, {})])
                    return self._send(200, {"url": f"{hub.url}/{repo}", "name": repo})
                if path == "/api/validate-yaml":  # model card metadata check
                    return self._send(200, {"errors": [], "warnings": []})
                m = re.match(r"/api/models/(.+?/.+?)/preupload/(.+)", path)
                if m:
                    files = json.loads(body)["files"]
                    return self._send(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None} for f in files]})
                m = re.match(r"/api/models/(.+?/.+?)/commit/(.+)", path)
                if m:
                    repo = m.group(1)
                    if repo not in hub.repos:
                        return self._send(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                    files = dict(hub.repos[repo][-1][1])
                    for line in body.decode().splitlines():
                        item = json.loads(line)
                        if item["key"] == "file":
                            files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                    commit = hashlib.sha1(repr(sorted(files.items())).encode() + str(len(hub.repos[repo])).encode()).hexdigest()
                    hub.repos[repo].append((commit, files))
                    return self._send(200, {"commitUrl": f"{hub.url}/{repo}/commit/{commit}", "commitOid": commit, "success": True})
                return self._send(404, {"error": f"fake hub: no route POST {path}"})

            def _resolve(self, head: bool):
                path = unquote(urlparse(self.path).path)
                hub.requests.append(f"{'HEAD' if head else 'GET'} {path}")
                m = re.match(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
                if not m:
                    return self._send(404, {"error": "no route"}, head=head)
                repo, revision, filename = m.groups()
                commits = hub.repos.get(repo)
                if not commits:
                    return self._send(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"}, head=head)
                found = commits[-1] if revision == "main" else next((c for c in commits if c[0] == revision), None)
                if found is None:
                    return self._send(404, {"error": "Revision not found"}, {"X-Error-Code": "RevisionNotFound"}, head=head)
                commit, files = found
                if filename not in files:
                    return self._send(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit}, head=head)
                content = files[filename]
                etag = '"' + hashlib.sha1(content).hexdigest() + '"'
                return self._send(200, content, {"X-Repo-Commit": commit, "ETag": etag, "Content-Type": "application/octet-stream"}, head=head)

            def do_HEAD(self):
                self._resolve(True)

            def do_GET(self):
                self._resolve(False)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
