"""The app factory, the import surface and the OpenAPI description."""

from __future__ import annotations

import subprocess
import sys


def test_registry_import_and_app_do_not_import_torch(tmp_path):
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "import llmpatch.registry\n"
        "from llmpatch.registry import Settings, create_app\n"
        f"app = create_app(Settings(data_dir=Path({str(tmp_path)!r})))\n"
        "import llmpatch.registry.cli\n"
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.') or m == 'transformers')\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_app_is_built_by_factory_not_at_import():
    import llmpatch.registry.app as module

    assert not [name for name, value in vars(module).items() if type(value).__name__ == "FastAPI"]


def test_public_surface():
    import llmpatch.registry

    assert llmpatch.registry.__all__ == ["Settings", "create_app"]


def test_openapi_describes_every_endpoint_without_leaking_columns(registry):
    spec = registry.client.get("/openapi.json").json()
    paths = spec["paths"]
    for path, method in [("/api/v1/patches", "post"), ("/api/v1/patches", "get"), ("/api/v1/patches/{name}", "get"),
                         ("/api/v1/patches/{name}/versions/{version}/yank", "post"),
                         ("/api/v1/patches/{name}/versions/{version}/unyank", "post"),
                         ("/api/v1/patches/{name}/deprecate", "post"), ("/api/v1/patches/{name}/keys", "post"),
                         ("/api/v1/patches/{name}/keys/{key_id}/revoke", "post"), ("/api/v1/patches/{name}/audit", "get"),
                         ("/api/v1/tokens", "post"), ("/api/v1/tokens/{token_id}", "delete"), ("/api/v1/me", "get"),
                         ("/blobs/sha256/{digest}", "get"), ("/tuf/metadata/{filename}", "get"),
                         ("/tuf/targets/{path}", "get")]:
        assert method in paths.get(path, {}), f"{method.upper()} {path} missing from OpenAPI"
    publish = paths["/api/v1/patches"]["post"]
    assert set(publish["requestBody"]["content"]["multipart/form-data"]["schema"]["required"]) == {"file", "signature"}
    text = str(spec["components"]["schemas"])
    for column in ("token_hash", "index_json", "skeleton", "owner_id", "manifest_json"):
        assert column not in text
    assert "ErrorResponse" in spec["components"]["schemas"]
