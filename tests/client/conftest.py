"""Client fixtures: a tiny model folder, the real registry server on 127.0.0.1 (SQLite,
ephemeral port) with its TUF root pinned in the client config, a publisher key, and `patch`
run in-process with its exit code, stdout and stderr."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest

from llmpatch.fingerprint import Fingerprint, fingerprint_folder
from llmpatch.manifest import BaseModelRef, KVLayout, Manifest
from llmpatch.patchfile import encode_patch, read_patch_bytes
from llmpatch.signing import public_key_to_pem, sign_patch
from live_server import LiveServer  # noqa: F401  (re-exported for the test modules)

HIDDEN = 32  # tests/tiny_models.py


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory):
    """Two tiny Llamas: `main` and `other` (same architecture, other weights)."""
    from tiny_models import save_tiny_model

    root = tmp_path_factory.mktemp("models")
    return {"main": save_tiny_model(root / "main", seed=0), "other": save_tiny_model(root / "other", seed=1)}


@pytest.fixture
def model_dir(model_dirs) -> Path:
    return model_dirs["main"]


@pytest.fixture
def fingerprints(model_dirs) -> dict[str, Fingerprint]:
    return {k: fingerprint_folder(v) for k, v in model_dirs.items()}




@dataclass
class Publisher:
    """Publishes test patches to the live registry with one token and one signing key."""

    url: str
    http: httpx.Client
    token: str
    fingerprints: dict
    key: object = None
    app: object = None
    published: list = field(default_factory=list)

    def make(self, name, version, *, model="main", n=4, seed=0, dependencies=(), conflicts=(), hidden=HIDDEN, kv=False) -> bytes:
        """A patch for one of the tiny models; `kv`: keys and values for its 2 layers x 2 KV heads x 8."""
        fp = self.fingerprints[model]
        shape = {"placement": "kv", "kv_layout": KVLayout(2, 2, 8)} if kv else {}
        manifest = Manifest(
            name=name, version=version, base_model=BaseModelRef(fp.architecture, fp.weights, f"tiny-{model}"),
            n_virtual_tokens=n, hidden_size=hidden, **shape,
            dependencies=tuple(_relation(d) for d in dependencies), conflicts=tuple(_relation(c) for c in conflicts),
        )
        prefix = np.random.default_rng(seed).standard_normal((n, manifest.prefix_width)).astype(np.float32) * 0.01
        return encode_patch(manifest, prefix)

    def publish(self, name, version, *, key=None, **kw) -> dict:
        data = self.make(name, version, **kw)
        key = key or self.key
        signature = sign_patch(read_patch_bytes(data), key).to_json().encode()
        files = {"file": ("p.safetensors", data, "application/octet-stream"),
                 "signature": ("p.safetensors.sig", signature, "application/json")}
        if name not in {n for n, _ in self.published}:  # the first upload claims the name with this key
            files["public_key"] = ("key.pem", public_key_to_pem(key.public_key()), "application/x-pem-file")
        response = self.http.post(f"{self.url}/api/v1/patches", files=files, headers=self.auth)
        assert response.status_code in (200, 201), response.text
        self.published.append((name, version))
        return response.json()

    @property
    def auth(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"}

    def post(self, path, body) -> dict:
        response = self.http.post(f"{self.url}{path}", json=body, headers=self.auth)
        assert response.status_code in (200, 201), response.text
        return response.json()


def _relation(text: str):
    from llmpatch.manifest import Relation

    name, _, spec = text.partition("@")
    return Relation(name, spec or "*")


@pytest.fixture
def registry(tmp_path, fingerprints):
    """A live registry with the client's `default` registry pointing at it (root pinned)."""
    pytest.importorskip("fastapi")
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from llmpatch.client._registry import add_registry
    from llmpatch.registry import Settings, create_app
    from llmpatch.registry.auth import create_token, create_user

    settings = Settings(data_dir=tmp_path / "registry-server")
    app = create_app(settings)
    with LiveServer(app) as url, httpx.Client(timeout=30) as http:
        with app.state.db.writer() as session:
            user = create_user(session, "alice")
            _, token = create_token(session, user, ["publish:*", "yank:*", "admin:*"])
        root = http.get(f"{url}/tuf/metadata/1.root.json")
        assert root.status_code == 200, root.text
        add_registry("default", url, root.content)
        yield Publisher(url, http, token, fingerprints, Ed25519PrivateKey.generate(), app)


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def json(self):
        return json.loads(self.out)


@pytest.fixture
def patch(capsys, monkeypatch, tmp_path):
    """Run `patch ARGS...` in-process from a project folder; returns exit code, stdout, stderr."""
    from llmpatch.cli import run

    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)

    def invoke(*args) -> Result:
        capsys.readouterr()
        code = run([str(a) for a in args], "patch")
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    invoke.project = project
    return invoke
