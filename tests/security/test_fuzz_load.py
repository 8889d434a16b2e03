"""Issue #6: schemathesis against the live server's /openapi.json (no 5xx for any generated
request), and a short load test of the read path with the server's memory roughly flat."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.registry.conftest import _running
from tests.registry.factories import new_key, patch_bytes, pem, upload

FUZZ_SECONDS = 60  # a bound on the whole fuzzing run, not per operation
EXAMPLES = 30  # per operation: ~20 operations, several hundred cases


@pytest.fixture
def live(tmp_path):
    with _running(tmp_path / "registry", "") as reg:
        auth = reg.user("alice")
        key = new_key()
        for version in ("1.0.0", "1.1.0"):
            data = patch_bytes("refusal", version, seed=hash(version) % 100)
            response = reg.client.post("/api/v1/patches", files=upload(data, key, pem(key) if version == "1.0.0" else None), headers=auth)
            assert response.status_code == 201, response.text
        reg.auth = auth
        yield reg


def test_schemathesis_no_server_errors(live):
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, Phase, given, settings

    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    failures, cases, statuses, started = [], [0], {}, time.monotonic()
    for result in schema.get_all_operations():
        operation = result.ok()
        if time.monotonic() - started > FUZZ_SECONDS:
            break

        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
        @given(case=operation.as_strategy())
        def fuzz(case):
            if time.monotonic() - started > FUZZ_SECONDS:
                return
            cases[0] += 1
            try:
                response = case.call(base_url=live.url, headers=dict(live.auth), timeout=30)
            except Exception as exc:  # a dropped connection or a timeout is a failure too
                failures.append(f"{operation.verbose_name}: {type(exc).__name__}: {exc}")
                return
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            if response.status_code >= 500:
                failures.append(f"{operation.verbose_name}: {response.status_code} {response.text[:200]} for {case.path_parameters} {case.query} {case.body!r:.200}")

        fuzz()
    print(f"schemathesis: {cases[0]} cases in {time.monotonic() - started:.0f} s, statuses {sorted(statuses.items())}")
    assert cases[0] >= 150, f"only {cases[0]} cases ran"
    assert not failures, failures[:10]


def test_read_path_load_memory_flat(tmp_path):
    """10 s of concurrent reads against `patch registry serve` (a subprocess): index, 304s,
    search, keys, TUF metadata, blobs, 404s. No errors, and the server's RSS after the run is
    within 30 MiB of its RSS after a warm-up."""
    psutil = pytest.importorskip("psutil")
    from .procs import registry_cli, serve

    data_dir = tmp_path / "registry"
    registry_cli("user", "create", "alice", "--data-dir", str(data_dir))
    token = registry_cli("token", "create", "--user", "alice", "--scope", "publish:*", "--data-dir", str(data_dir))["token"]
    proc, url = serve(data_dir)
    try:
        key = new_key()
        for version in ("1.0.0", "1.1.0"):
            data = patch_bytes("refusal", version, seed=hash(version) % 100)
            response = httpx.post(f"{url}/api/v1/patches", files=upload(data, key, pem(key) if version == "1.0.0" else None),
                                  headers={"Authorization": f"Bearer {token}"}, timeout=30)
            assert response.status_code == 201, response.text
        index = httpx.get(f"{url}/api/v1/patches/refusal")
        etag, blob = index.headers["etag"], index.json()["versions"][0]["file_url"]
        paths = [("/api/v1/patches/refusal", {}), ("/api/v1/patches/refusal", {"If-None-Match": etag}),
                 ("/api/v1/patches?q=ref", {}), ("/api/v1/patches/refusal/keys", {}), ("/tuf/metadata/timestamp.json", {}),
                 ("/tuf/metadata/1.root.json", {}), (blob, {}), ("/api/v1/patches/nope", {})]
        errors, counts, stop = [], [0], threading.Event()

        def load():
            with httpx.Client(base_url=url, timeout=30) as http:
                while not stop.is_set():
                    for path, headers in paths:
                        try:
                            r = http.get(path, headers=headers)
                        except httpx.HTTPError as exc:
                            errors.append(f"{path}: {exc!r}")
                            continue
                        counts[0] += 1
                        if r.status_code not in (200, 304, 404):
                            errors.append(f"{path}: {r.status_code}")

        def run(seconds: float) -> None:
            stop.clear()
            workers = [threading.Thread(target=load, daemon=True) for _ in range(4)]
            for w in workers:
                w.start()
            time.sleep(seconds)
            stop.set()
            for w in workers:
                w.join(timeout=30)

        server = psutil.Process(proc.pid)
        run(2)  # warm-up: pools, caches, allocator arenas
        warm, done = server.memory_info().rss, counts[0]
        run(10)
        after = server.memory_info().rss
        print(f"load: {counts[0] - done} requests in 10 s, server RSS {warm / 2**20:.1f} -> {after / 2**20:.1f} MiB")
        assert not errors, errors[:5]
        assert counts[0] - done > 300, f"only {counts[0] - done} requests in 10 s"
        assert after - warm < 30 * 1024 * 1024, f"server RSS grew by {(after - warm) / 2**20:.1f} MiB"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
