"""Several stateless workers over one PostgreSQL database: a write through one worker is
visible at once through another, although each worker caches index documents."""

from __future__ import annotations

import time

import httpx
import pytest

from llmpatch.registry import Settings, create_app
from llmpatch.registry.fastpath import index_lookup

from .conftest import LiveServer
from .factories import new_key, patch_bytes, pem, upload


def _wait_healthy(app) -> None:
    deadline = time.monotonic() + 10
    while not app.state.index_cache.healthy:
        assert time.monotonic() < deadline, "index cache listener did not connect"
        time.sleep(0.02)


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_write_on_one_worker_is_seen_by_another(registry, db_url, tmp_path):
    reader_app = create_app(Settings(data_dir=tmp_path / "worker2", db_url=db_url, signing=False))
    with LiveServer(reader_app) as reader_url, httpx.Client(base_url=reader_url) as reader:
        _wait_healthy(reader_app)
        alice = registry.user("alice")
        key = new_key()
        assert reader.get("/api/v1/patches/refusal").status_code == 404
        registry.client.post("/api/v1/patches", files=upload(patch_bytes(version="1.0.0"), key, pem(key)), headers=alice)
        first = reader.get("/api/v1/patches/refusal")
        assert [v["version"] for v in first.json()["versions"]] == ["1.0.0"]
        deadline = time.monotonic() + 5  # the publish's NOTIFY may still evict the first read
        while "refusal" not in reader_app.state.index_cache.entries:
            assert time.monotonic() < deadline, "worker 2 never cached the index"
            reader.get("/api/v1/patches/refusal")
            time.sleep(0.01)

        registry.client.post("/api/v1/patches", files=upload(patch_bytes(version="1.1.0", seed=1), key), headers=alice)
        deadline = time.monotonic() + 5
        while [v["version"] for v in reader.get("/api/v1/patches/refusal").json()["versions"]] != ["1.0.0", "1.1.0"]:
            assert time.monotonic() < deadline, "worker 2 kept serving the old index"
            time.sleep(0.01)
        registry.client.post("/api/v1/patches/refusal/versions/1.0.0/yank", json={"reason": "bad"}, headers=alice)
        deadline = time.monotonic() + 5
        while not reader.get("/api/v1/patches/refusal").json()["versions"][0]["yanked"]:
            assert time.monotonic() < deadline, "worker 2 missed the yank"
            time.sleep(0.01)
        # A read-only worker (no signing keys) refuses writes with a clear error.
        r = reader.post("/api/v1/patches/refusal/versions/1.0.0/unyank", json={}, headers=alice)
        assert r.status_code == 503 and r.json()["error"]["code"] == "signing_unavailable"


def test_cache_refuses_a_read_that_raced_a_notification():
    from llmpatch.registry.index_cache import IndexCache

    cache = IndexCache("postgresql://unused")
    cache.healthy = True
    generation = cache.snapshot()
    cache._invalidate("refusal")  # a commit's notification lands between our read and our store
    cache.put("refusal", (200, b"old", {}), generation)
    assert cache.get("refusal") is None
    cache.put("refusal", (200, b"new", {}), cache.snapshot())
    assert cache.get("refusal") == (200, b"new", {})
    cache.healthy = False  # listener lost: nothing is served from the cache
    assert cache.get("refusal") is None and cache.snapshot() is None


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_fast_path_handles_head_304_and_bad_names(registry):
    alice = registry.user("alice")
    key = new_key()
    registry.client.post("/api/v1/patches", files=upload(patch_bytes(), key, pem(key)), headers=alice)
    get = registry.client.get("/api/v1/patches/refusal")
    head = registry.client.head("/api/v1/patches/refusal")
    assert head.status_code == 200 and head.content == b"" and head.headers["etag"] == get.headers["etag"]
    assert int(head.headers["content-length"]) == len(get.content)
    r = registry.client.get("/api/v1/patches/refusal", headers={"If-None-Match": f'W/"x", {get.headers["etag"]}'})
    assert r.status_code == 304
    bad = registry.client.get("/api/v1/patches/%E2%80%AEevil")
    assert bad.status_code == 404 and bad.json()["error"]["code"] == "not_found"
    assert index_lookup(registry._db, "REFUSAL")[1] == get.content
