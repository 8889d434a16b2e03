"""`patch registry …` bootstrap commands, run in a subprocess like a user would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx

from .conftest import LiveServer
from .factories import new_key, patch_bytes, pem, upload


def run(*args, env_home):
    return subprocess.run([str(Path(sys.executable).parent / "llm-patch"), "registry", *args], capture_output=True, text=True,
                          env={"LLMPATCH_HOME": str(env_home), "PATH": "/usr/bin:/bin"}, timeout=120)


def test_bootstrap_user_token_key_then_publish(tmp_path):
    data_dir = tmp_path / "reg"
    common = ["--data-dir", str(data_dir)]
    r = run("migrate", *common, "--json", env_home=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["from"] is None

    r = run("user", "create", "alice", *common, "--json", env_home=tmp_path)
    assert r.returncode == 0 and json.loads(r.stdout)["name"] == "alice"
    r = run("user", "create", "alice", *common, env_home=tmp_path)
    assert r.returncode == 1 and "user `alice` already exists" in r.stderr

    r = run("token", "create", "--user", "alice", "--scope", "publish:*", "--scope", "admin:*", *common, "--json", env_home=tmp_path)
    assert r.returncode == 0, r.stderr
    token = json.loads(r.stdout)
    assert token["token"].startswith("lpt_") and token["scopes"] == ["admin:*", "publish:*"]
    r = run("token", "create", "--user", "alice", "--scope", "root:*", *common, env_home=tmp_path)
    assert r.returncode == 1 and "scope `root:*` is not" in r.stderr
    r = run("token", "create", "--user", "nobody", "--scope", "publish:*", *common, env_home=tmp_path)
    assert r.returncode == 1 and "no user `nobody`" in r.stderr

    from llmpatch.registry import Settings, create_app

    key, second = new_key(), new_key()
    app = create_app(Settings(data_dir=data_dir))
    headers = {"Authorization": f"Bearer {token['token']}"}
    with LiveServer(app) as url:
        assert httpx.post(f"{url}/api/v1/patches", files=upload(patch_bytes(), key, pem(key)), headers=headers).status_code == 201
    app.state.db.dispose()

    (tmp_path / "second.pem").write_bytes(pem(second))
    r = run("key", "add", "--name", "refusal", str(tmp_path / "second.pem"), *common, "--json", env_home=tmp_path)
    assert r.returncode == 0, r.stderr
    kid = json.loads(r.stdout)["key_id"]
    r = run("key", "revoke", "--name", "refusal", kid, *common, "--json", env_home=tmp_path)
    assert r.returncode == 0 and json.loads(r.stdout)["revoked_at"] is not None
    r = run("key", "revoke", "--name", "nosuch", kid, *common, env_home=tmp_path)
    assert r.returncode == 1 and "no patch named `nosuch`" in r.stderr

    r = run("token", "revoke", str(token["id"]), *common, "--json", env_home=tmp_path)
    assert r.returncode == 0 and json.loads(r.stdout) == {"id": token["id"], "revoked": True}
    r = run("refresh-metadata", *common, "--json", env_home=tmp_path)
    assert r.returncode == 0 and json.loads(r.stdout) == {"signed": False}


def test_usage_error_exits_2(tmp_path):
    r = run("token", "create", "--data-dir", str(tmp_path), env_home=tmp_path)
    assert r.returncode == 2 and "Missing option '--user'" in r.stderr


def test_serve_command_runs_a_server(tmp_path):
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cli = str(Path(sys.executable).parent / "llm-patch")
    process = subprocess.Popen([cli, "registry", "serve", "--port", str(port), "--data-dir", str(tmp_path / "srv")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={"LLMPATCH_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=1)
                break
            except httpx.HTTPError:
                assert process.poll() is None, process.stderr.read().decode()
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
        assert response.json()["status"] == "ok"
        assert httpx.get(f"http://127.0.0.1:{port}/tuf/metadata/1.root.json").status_code == 200
        assert (tmp_path / "srv" / "registry.sqlite3").exists() and (tmp_path / "srv" / "tuf-keys" / "root.pem").exists()
        assert oct((tmp_path / "srv" / "tuf-keys" / "root.pem").stat().st_mode & 0o777) == "0o600"
    finally:
        process.terminate()
        process.wait(timeout=15)
    assert process.returncode in (0, -15)  # uvicorn re-raises SIGTERM after a graceful shutdown
