"""Twenty publishes of the same name@version at once, over real HTTP: exactly one wins,
the rest get 409, and the database and TUF metadata are consistent afterwards."""

from __future__ import annotations

import concurrent.futures
import json

import httpx
from sqlalchemy import func, select

from llmpatch.registry.models import AuditEvent, Patch, PublisherKey, Version

from .factories import new_key, patch_bytes, pem, upload

N = 20


def test_twenty_concurrent_publishes_of_one_version(registry):
    alice = registry.user("alice")
    key = new_key()
    # Twenty different files, all claiming the new name `race` at version 1.0.0.
    bodies = [upload(patch_bytes("race", "1.0.0", seed=i), key, pem(key)) for i in range(N)]

    def send(files):
        with httpx.Client(base_url=registry.url, timeout=60) as client:
            return client.post("/api/v1/patches", files=files, headers=alice)

    with concurrent.futures.ThreadPoolExecutor(N) as pool:
        responses = list(pool.map(send, bodies))

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [409] * (N - 1), [r.text for r in responses if r.status_code not in (201, 409)]
    assert {r.json()["error"]["code"] for r in responses if r.status_code == 409} == {"version_exists"}
    winner = next(r.json() for r in responses if r.status_code == 201)

    with registry._db.reader() as session:
        assert session.execute(select(func.count()).select_from(Patch)).scalar() == 1
        assert session.execute(select(func.count()).select_from(PublisherKey)).scalar() == 1
        (version,) = session.execute(select(Version)).scalars().all()
        assert version.sha256 == winner["sha256"]
        actions = session.execute(select(AuditEvent.action).order_by(AuditEvent.id)).scalars().all()
        assert actions == ["claim", "publish"]

    index = registry.client.get("/api/v1/patches/race").json()
    assert [v["sha256"] for v in index["versions"]] == [winner["sha256"]]
    targets_version = json.loads(registry.client.get("/tuf/metadata/timestamp.json").content)["signed"]["version"]
    assert targets_version == 2  # initial + exactly one publish
    assert registry.client.get(winner["file_url"]).status_code == 200


def test_concurrent_publishes_of_different_versions_all_succeed(registry):
    alice = registry.user("alice")
    key = new_key()
    first = registry.client.post("/api/v1/patches", files=upload(patch_bytes("many", "0.0.1"), key, pem(key)), headers=alice)
    assert first.status_code == 201
    bodies = [upload(patch_bytes("many", f"1.{i}.0", seed=i), key) for i in range(10)]

    def send(files):
        with httpx.Client(base_url=registry.url, timeout=60) as client:
            return client.post("/api/v1/patches", files=files, headers=alice)

    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        statuses = [r.status_code for r in pool.map(send, bodies)]
    assert statuses == [201] * 10
    assert len(registry.client.get("/api/v1/patches/many").json()["versions"]) == 11
    timestamp = json.loads(registry.client.get("/tuf/metadata/timestamp.json").content)["signed"]
    assert timestamp["version"] == 12 and timestamp["meta"]["snapshot.json"]["version"] == 12
