"""Issue #6, faults: the registry killed with SIGKILL in the middle of publishes, the client
killed in the middle of installs, and the database going away under load. Afterwards nothing
half-done is visible, nothing referenced is missing, and the next attempt succeeds."""

from __future__ import annotations

import hashlib
import json
import random
import signal
import subprocess
import threading
import time
import tomllib
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from llmpatch.signing import public_key_to_pem

from .procs import KILLS, PATCH, kill9 as _kill9, registry_cli as _registry_cli, serve as _serve


def _consistent(url: str, data_dir: Path) -> list[str]:
    """Every invariant after a crash; returns the visible versions of `toxicity`."""
    http = httpx.Client(base_url=url, timeout=10)
    index = http.get("/api/v1/patches/toxicity")
    versions = [v["version"] for v in index.json()["versions"]] if index.status_code == 200 else []
    for v in index.json()["versions"] if index.status_code == 200 else []:
        for which in ("file", "signature"):
            blob = http.get(v[f"{which}_url"])
            assert blob.status_code == 200, f"{v['version']} {which} blob missing"
            assert hashlib.sha256(blob.content).hexdigest() == v["sha256" if which == "file" else "signature_sha256"]
    # the signed repository state names exactly the visible versions, and a fresh TUF client accepts it
    from tuf.ngclient import Updater

    meta = data_dir.parent / f"tuf-client-{time.monotonic_ns()}"
    meta.mkdir()
    updater = Updater(str(meta), f"{url}/tuf/metadata/", str(meta), f"{url}/tuf/targets/",
                      bootstrap=http.get("/tuf/metadata/1.root.json").content)
    updater.refresh()
    for v in versions:
        assert updater.get_targetinfo(f"toxicity/toxicity-{v}.safetensors") is not None, v
    targets = json.loads((meta / "targets.json").read_bytes())["signed"]["targets"]
    signed_versions = sorted(p.split("toxicity-", 1)[1].removesuffix(".safetensors") for p in targets if p.endswith(".safetensors"))
    assert signed_versions == sorted(versions)
    http.close()
    return versions


def test_registry_killed_with_sigkill_during_publishes(tmp_path):
    from tests.registry.factories import patch_bytes, sign

    data_dir = tmp_path / "registry"
    _registry_cli("user", "create", "alice", "--data-dir", str(data_dir))
    token = _registry_cli("token", "create", "--user", "alice", "--scope", "publish:*", "--data-dir", str(data_dir))["token"]
    auth = {"Authorization": f"Bearer {token}"}
    key = Ed25519PrivateKey.generate()

    def files(version: str, claim: bool = False) -> dict:
        data = patch_bytes("toxicity", version, seed=hash(version) % 1000)
        parts = {"file": ("p", data), "signature": ("s", sign(data, key))}
        if claim:
            parts["public_key"] = ("k", public_key_to_pem(key.public_key()))
        return parts

    proc, url = _serve(data_dir)
    assert httpx.post(f"{url}/api/v1/patches", files=files("0.0.1", claim=True), headers=auth, timeout=30).status_code == 201
    acknowledged, attempted, rng, committed = {"0.0.1"}, [], random.Random(6), 0
    started = time.monotonic()
    try:
        for round_ in range(KILLS):
            stop = threading.Event()

            def publish_loop(n=round_):
                with httpx.Client(timeout=30) as http:
                    for i in range(1000):
                        if stop.is_set():
                            return
                        version = f"{n + 1}.{i}.0"
                        attempted.append(version)
                        try:
                            response = http.post(f"{url}/api/v1/patches", files=files(version), headers=auth)
                        except httpx.HTTPError:
                            return
                        if response.status_code == 201:
                            acknowledged.add(version)

            worker = threading.Thread(target=publish_loop, daemon=True)
            worker.start()
            time.sleep(rng.uniform(0.05, 0.6))
            _kill9(proc)
            stop.set()
            worker.join(timeout=30)
            proc, url = _serve(data_dir)
            visible = _consistent(url, data_dir)
            assert acknowledged <= set(visible), f"acknowledged but lost: {acknowledged - set(visible)}"
            # the version in flight when the server died publishes now (201), or was committed (200)
            in_flight = attempted[-1]
            again = httpx.post(f"{url}/api/v1/patches", files=files(in_flight), headers=auth, timeout=30)
            assert again.status_code in (200, 201), again.text
            assert (again.status_code == 200) == (in_flight in visible)
            committed += again.status_code == 200
            acknowledged.add(in_flight)
        print(f"registry SIGKILL: {KILLS} kills, {len(attempted)} publishes attempted, {len(acknowledged)} versions now, "
              f"in-flight version committed before the kill {committed}x, lost (re-published) {KILLS - committed}x")
        assert time.monotonic() - started < 150
        assert set(_consistent(url, data_dir)) == acknowledged
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=10)


def test_client_killed_with_sigkill_during_install(registry, patch, model_dir):
    """`patch install` as a subprocess, killed at random moments (mostly late, where it
    downloads, verifies, caches and writes): the lockfile is always the old one or the complete
    new one, and every patch it names is in the cache and verifies."""
    from llmpatch.client._cache import Cache

    for minor in range(KILLS + 2):
        registry.publish("toxicity", f"1.{minor}.0", seed=minor)
    registry.publish("harmfulness", "1.0.0", seed=99)
    assert patch("install", "toxicity@=1.0.0", "harmfulness", "--model", model_dir, "--project", ".").code == 0
    project = patch.project
    rng = random.Random(7)
    t0 = time.monotonic()
    done = subprocess.run([PATCH, "install", "toxicity@=1.1.0", "--project", "."], cwd=project, capture_output=True, text=True)
    full = time.monotonic() - t0  # one complete install
    assert done.returncode == 0, done.stderr
    blobs = lambda: {p.name for p in (Cache().root / "blobs").rglob("*") if p.is_file()}  # noqa: E731
    outcomes = {"old lock": 0, "old lock, new blobs cached": 0, "new lock": 0}
    for round_ in range(KILLS):
        want = f"1.{round_ + 2}.0"  # never installed before: it has to be downloaded and cached
        lock_before, cached_before = (project / "patches.lock").read_bytes(), blobs()
        proc = subprocess.Popen([PATCH, "install", f"toxicity@={want}", "--project", "."], cwd=project,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.6 * full, 1.1 * full))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        lock_after = (project / "patches.lock").read_bytes()
        versions = {p["name"]: p["version"] for p in tomllib.loads(lock_after.decode())["patch"]}
        if lock_after == lock_before:
            outcomes["old lock" if blobs() == cached_before else "old lock, new blobs cached"] += 1
        else:
            assert versions == {"toxicity": want, "harmfulness": "1.0.0"}
            outcomes["new lock"] += 1
        verified = patch("verify", "--offline")
        assert verified.code == 0, verified.out + verified.err
    print(f"client SIGKILL: {outcomes}")
    assert sum(outcomes.values()) == KILLS


@pytest.mark.postgres
def test_database_goes_away_under_load_then_recovers_without_restart(tmp_path):
    """PostgreSQL refuses connections and every backend of the registry's database is
    terminated mid-load: answers are 200 (cached) or clean JSON 5xx, never a dropped
    connection; when the database is back, reads and writes work again without a restart."""
    import uuid

    from sqlalchemy import create_engine, text

    from llmpatch.registry import Settings, create_app
    from llmpatch.registry.auth import create_token, create_user
    from llmpatch.registry.db import upgrade
    from tests.registry.conftest import PG_ADMIN_URL, LiveServer
    from tests.registry.factories import new_key, patch_bytes, pem, upload

    name = f"llmpatch_sec_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        pytest.fail(f"PostgreSQL at `{PG_ADMIN_URL}` is needed: {exc}")

    def sql(statement: str) -> None:
        with admin.connect() as c:
            c.execute(text(statement))

    def terminate() -> None:
        sql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()")

    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    try:
        upgrade(url)
        app = create_app(Settings(data_dir=tmp_path / "registry", db_url=url))
        with app.state.db.writer() as session:
            _, token = create_token(session, create_user(session, "alice"), ["publish:*"])
        auth = {"Authorization": f"Bearer {token}"}
        key = new_key()
        with LiveServer(app) as base, httpx.Client(base_url=base, timeout=30) as http:
            assert http.post("/api/v1/patches", files=upload(patch_bytes("refusal", "1.0.0"), key, pem(key)), headers=auth).status_code == 201
            paths = ["/api/v1/patches?q=ref", "/api/v1/patches/refusal", "/api/v1/patches/refusal/keys",
                     "/tuf/metadata/timestamp.json", "/api/v1/patches/refusal/audit"]
            phase, seen, problems, stop = ["up"], [], [], threading.Event()

            def load():
                with httpx.Client(base_url=base, timeout=30) as c:
                    while not stop.is_set():
                        for p in paths:
                            now = phase[0]
                            try:
                                r = c.get(p)
                            except httpx.HTTPError as exc:
                                problems.append(f"{p}: {type(exc).__name__}: {exc}")
                                continue
                            if r.status_code != 200:
                                try:
                                    code = r.json()["error"]["code"]
                                except Exception:
                                    problems.append(f"{p}: {r.status_code} not JSON: {r.text[:100]}")
                                    continue
                                if r.status_code < 500:
                                    problems.append(f"{p}: {r.status_code} {code}")
                                seen.append((now, r.status_code, code))
                            else:
                                seen.append((now, 200, None))

            workers = [threading.Thread(target=load, daemon=True) for _ in range(3)]
            for w in workers:
                w.start()
            time.sleep(1)
            phase[0] = "down"
            sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            for _ in range(10):
                terminate()
                time.sleep(0.2)
            write_down = http.post("/api/v1/patches", files=upload(patch_bytes("refusal", "1.1.0", seed=1), key), headers=auth)
            assert write_down.status_code >= 500 and "error" in write_down.json()
            phase[0] = "back"
            sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if all(http.get(p).status_code == 200 for p in paths):
                    break
                time.sleep(0.2)
            else:
                pytest.fail("the registry did not recover within 20 s of the database coming back")
            stop.set()
            for w in workers:
                w.join(timeout=30)
            assert not problems, problems[:5]
            assert any(phase_ == "down" and status >= 500 for phase_, status, _ in seen), "the outage was not noticed"
            again = http.post("/api/v1/patches", files=upload(patch_bytes("refusal", "1.1.0", seed=1), key), headers=auth)
            assert again.status_code == 201, again.text
            assert [v["version"] for v in http.get("/api/v1/patches/refusal").json()["versions"]] == ["1.0.0", "1.1.0"]
            app.state.db  # keep a reference until the server stops
    finally:
        sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
