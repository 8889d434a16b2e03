"""Publishing and reading over a real server: the happy paths and the rules that make
name@version immutable."""

from __future__ import annotations

from .factories import ARCH, OTHER_ARCH, WEIGHTS, new_key, patch_bytes, pem, upload


def publish(registry, headers, data, key, public_key=None):
    return registry.client.post("/api/v1/patches", files=upload(data, key, public_key), headers=headers)


def test_first_publish_claims_name_and_index_lists_version(registry):
    alice = registry.user("alice")
    key = new_key()
    data = patch_bytes("Refusal_Core", "1.0.0", domains=("toxicity",), evaluation={"refusal_rate": 0.9},
                       dependencies=({"name": "base", "spec": ">=1.0"},))
    response = publish(registry, alice, data, key, pem(key))
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["name"] == "refusal-core" and body["version"] == "1.0.0" and body["created"] is True

    index = registry.client.get("/api/v1/patches/REFUSAL_core")
    assert index.status_code == 200
    doc = index.json()
    assert doc["name"] == "refusal-core" and doc["owner"] == "alice"
    (v,) = doc["versions"]
    assert v["sha256"] == body["sha256"] and v["size"] == len(data)
    assert v["base_model"] == {"architecture": ARCH, "weights": WEIGHTS, "name": "tiny-test-model"}
    assert (v["n_virtual_tokens"], v["hidden_size"], v["domains"]) == (4, 8, ["toxicity"])
    assert v["dependencies"] == [{"name": "base", "spec": ">=1.0"}]
    assert v["yanked"] is False and v["yank_reason"] is None and v["uploaded_by"] == "alice"
    assert v["manifest"]["evaluation"] == {"refusal_rate": 0.9}
    assert v["uploaded_at"].endswith("Z")

    blob = registry.client.get(v["file_url"])
    assert blob.status_code == 200 and blob.content == data
    assert blob.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert blob.headers["etag"] == f'"sha256:{v["sha256"]}"'
    assert registry.client.get(v["file_url"], headers={"If-None-Match": blob.headers["etag"]}).status_code == 304
    assert registry.client.get(v["signature_url"]).json()["key_id"] == v["key_id"]


def test_index_etag_and_304(registry):
    alice = registry.user("alice")
    key = new_key()
    publish(registry, alice, patch_bytes(version="1.0.0"), key, pem(key))
    first = registry.client.get("/api/v1/patches/refusal")
    etag = first.headers["etag"]
    again = registry.client.get("/api/v1/patches/refusal", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    publish(registry, alice, patch_bytes(version="1.1.0", seed=1), key)
    changed = registry.client.get("/api/v1/patches/refusal", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    assert [v["version"] for v in changed.json()["versions"]] == ["1.0.0", "1.1.0"]


def test_versions_sorted_by_semver(registry):
    alice = registry.user("alice")
    key = new_key()
    for i, version in enumerate(["1.10.0", "1.2.0", "1.2.0-rc.1", "0.9.0"]):
        assert publish(registry, alice, patch_bytes(version=version, seed=i), key, pem(key) if i == 0 else None).status_code == 201
    versions = [v["version"] for v in registry.client.get("/api/v1/patches/refusal").json()["versions"]]
    assert versions == ["0.9.0", "1.2.0-rc.1", "1.2.0", "1.10.0"]


def test_identical_reupload_is_noop_and_different_bytes_conflict(registry):
    alice = registry.user("alice")
    key = new_key()
    data = patch_bytes()
    assert publish(registry, alice, data, key, pem(key)).status_code == 201
    before = registry.state()
    again = publish(registry, alice, data, key)
    assert again.status_code == 200 and again.json()["created"] is False
    assert registry.state() == before

    other = publish(registry, alice, patch_bytes(seed=7), key)
    assert other.status_code == 409
    assert other.json() == {"error": {"code": "version_exists", "message":
                                      "`refusal@1.0.0` already exists with different content; versions are immutable"}}
    build = publish(registry, alice, patch_bytes(version="1.0.0+build.2", seed=8), key)
    assert build.status_code == 409 and build.json()["error"]["code"] == "version_exists"
    assert registry.state() == before


def test_yank_unyank_deprecate_and_audit(registry):
    alice = registry.user("alice")
    key = new_key()
    data = patch_bytes()
    publish(registry, alice, data, key, pem(key))
    r = registry.client.post("/api/v1/patches/refusal/versions/1.0.0/yank", json={"reason": "leaks the system prompt"}, headers=alice)
    assert r.status_code == 200 and r.json()["yanked"] is True
    v = registry.client.get("/api/v1/patches/refusal").json()["versions"][0]
    assert (v["yanked"], v["yank_reason"]) == (True, "leaks the system prompt")
    # Yanked versions stay immutable: another file under the same version is refused.
    assert publish(registry, alice, patch_bytes(seed=3), key).json()["error"]["code"] == "version_exists"
    # ... and stay downloadable for existing lock files.
    assert registry.client.get(v["file_url"]).content == data

    assert registry.client.post("/api/v1/patches/refusal/versions/1.0.0/unyank", json={}, headers=alice).json()["yanked"] is False
    r = registry.client.post("/api/v1/patches/refusal/deprecate", json={"message": "use refusal-v2"}, headers=alice)
    assert r.json() == {"name": "refusal", "deprecated": "use refusal-v2"}
    assert registry.client.get("/api/v1/patches/refusal").json()["deprecated"] == "use refusal-v2"

    events = registry.client.get("/api/v1/patches/refusal/audit").json()["events"]
    assert [(e["actor"], e["action"], e["version"]) for e in events] == [
        ("alice", "claim", None), ("alice", "publish", "1.0.0"), ("alice", "yank", "1.0.0"),
        ("alice", "unyank", "1.0.0"), ("alice", "deprecate", None)]
    assert events[2]["detail"] == {"reason": "leaks the system prompt"}


def test_yank_unknown_version_is_404(registry):
    alice = registry.user("alice")
    key = new_key()
    publish(registry, alice, patch_bytes(), key, pem(key))
    r = registry.client.post("/api/v1/patches/refusal/versions/9.9.9/yank", json={"reason": "x"}, headers=alice)
    assert r.status_code == 404
    assert r.json() == {"error": {"code": "not_found", "message": "no version `9.9.9` of `refusal`"}}


def test_keys_register_revoke_and_signing_rules(registry):
    alice = registry.user("alice")
    first, second = new_key(), new_key()
    publish(registry, alice, patch_bytes(version="1.0.0"), first, pem(first))
    # An unregistered key is refused ...
    r = publish(registry, alice, patch_bytes(version="1.1.0", seed=1), second)
    assert r.status_code == 403 and r.json()["error"]["code"] == "untrusted_key"
    # ... until the owner registers it.
    r = registry.client.post("/api/v1/patches/refusal/keys", json={"public_key_pem": pem(second).decode()}, headers=alice)
    assert r.status_code == 201
    second_id = r.json()["key_id"]
    dup = registry.client.post("/api/v1/patches/refusal/keys", json={"public_key_pem": pem(second).decode()}, headers=alice)
    assert dup.status_code == 409 and dup.json()["error"]["code"] == "key_exists"
    assert publish(registry, alice, patch_bytes(version="1.1.0", seed=1), second).status_code == 201
    # Revoked keys can no longer publish.
    r = registry.client.post(f"/api/v1/patches/refusal/keys/{second_id}/revoke", headers=alice)
    assert r.status_code == 200 and r.json()["revoked_at"] is not None
    r = publish(registry, alice, patch_bytes(version="1.2.0", seed=2), second)
    assert r.status_code == 403 and r.json()["error"] == {
        "code": "revoked_key", "message": f"signed by key `{second_id[:16]}`, which was revoked for `refusal`"}
    keys = registry.client.get("/api/v1/patches/refusal/keys").json()["keys"]
    assert [(k["key_id"] == second_id, k["revoked_at"] is not None) for k in keys] == [(False, False), (True, True)]


def test_other_user_cannot_publish_yank_or_add_keys(registry):
    alice, mallory = registry.user("alice"), registry.user("mallory")
    key, evil = new_key(), new_key()
    publish(registry, alice, patch_bytes(), key, pem(key))
    before = registry.state()
    r = publish(registry, mallory, patch_bytes(version="2.0.0"), evil, pem(evil))
    assert r.status_code == 403 and r.json()["error"] == {"code": "forbidden", "message": "user `mallory` does not own `refusal`"}
    r = registry.client.post("/api/v1/patches/refusal/versions/1.0.0/yank", json={"reason": "x"}, headers=mallory)
    assert r.status_code == 403
    r = registry.client.post("/api/v1/patches/refusal/keys", json={"public_key_pem": pem(evil).decode()}, headers=mallory)
    assert r.status_code == 403
    assert registry.state() == before


def test_scopes_limit_tokens(registry):
    owner_all = registry.user("alice")
    key = new_key()
    publish(registry, owner_all, patch_bytes(), key, pem(key))
    publish_only = registry.user("alice", "publish:refusal")
    r = registry.client.post("/api/v1/patches/refusal/versions/1.0.0/yank", json={"reason": "x"}, headers=publish_only)
    assert r.status_code == 403 and r.json()["error"]["message"] == "token lacks scope `yank:refusal`"
    other_name = registry.user("alice", "publish:other")
    r = publish(registry, other_name, patch_bytes(version="1.1.0", seed=1), key)
    assert r.status_code == 403 and r.json()["error"]["message"] == "token lacks scope `publish:refusal`"
    assert publish(registry, publish_only, patch_bytes(version="1.1.0", seed=1), key).status_code == 201


def test_token_api(registry):
    limited = registry.user("alice", "publish:refusal", "yank:refusal")
    me = registry.client.get("/api/v1/me", headers=limited).json()
    assert me["user"] == "alice" and me["scopes"] == ["publish:refusal", "yank:refusal"]
    r = registry.client.post("/api/v1/tokens", json={"description": "ci", "scopes": ["publish:refusal"]}, headers=limited)
    assert r.status_code == 201 and r.json()["token"].startswith("lpt_")
    new = {"Authorization": f"Bearer {r.json()['token']}"}
    assert registry.client.get("/api/v1/me", headers=new).json()["scopes"] == ["publish:refusal"]
    escalate = registry.client.post("/api/v1/tokens", json={"scopes": ["admin:*"]}, headers=limited)
    assert escalate.status_code == 403
    assert escalate.json()["error"]["message"] == "your token cannot grant scopes it does not hold: admin:*"
    from sqlalchemy import select

    from llmpatch.registry.models import Token

    with registry._db.reader() as session:  # only hashes are stored
        stored = session.execute(select(Token.token_hash)).scalars().all()
    assert r.json()["token"] not in stored and len(stored) == 2 and all(len(h) == 64 for h in stored)
    tokens = registry.client.get("/api/v1/tokens", headers=limited).json()["tokens"]
    assert [t["description"] for t in tokens] == ["", "ci"] and "token_hash" not in tokens[0]
    assert registry.client.delete(f"/api/v1/tokens/{r.json()['id']}", headers=limited).status_code == 200
    gone = registry.client.get("/api/v1/me", headers=new)
    assert gone.status_code == 401 and gone.json()["error"]["code"] == "unauthorized"


def test_search_by_name_domain_and_base_model(registry):
    alice = registry.user("alice")
    key = new_key()
    publish(registry, alice, patch_bytes("refusal", domains=("toxicity",)), key, pem(key))
    publish(registry, alice, patch_bytes("medical-advice", domains=("medical",), arch=OTHER_ARCH), key, pem(key))
    publish(registry, alice, patch_bytes("pii-filter", domains=("privacy", "medical")), key, pem(key))

    def names(**params):
        r = registry.client.get("/api/v1/patches", params=params)
        assert r.status_code == 200
        return [x["name"] for x in r.json()["results"]]

    assert names() == ["medical-advice", "pii-filter", "refusal"]
    assert names(q="REFU") == ["refusal"]
    assert names(q="%") == []  # LIKE wildcards are escaped
    assert names(domain="medical") == ["medical-advice", "pii-filter"]
    assert names(base_model=OTHER_ARCH) == ["medical-advice"]
    assert names(base_model=WEIGHTS) == ["medical-advice", "pii-filter", "refusal"]
    assert names(domain="medical", base_model=ARCH) == ["pii-filter"]
    result = registry.client.get("/api/v1/patches", params={"q": "pii"}).json()["results"][0]
    assert result["latest_version"] == "1.0.0" and result["domains"] == ["medical", "privacy"]


def test_reads_do_not_write(registry):
    alice = registry.user("alice")
    key = new_key()
    publish(registry, alice, patch_bytes(), key, pem(key))
    before = registry.state()
    for path in ["/api/v1/patches/refusal", "/api/v1/patches?q=ref", "/api/v1/patches/refusal/keys",
                 "/api/v1/patches/refusal/audit", "/tuf/metadata/timestamp.json", "/", "/patches/refusal"]:
        assert registry.client.get(path).status_code == 200, path
    assert registry.state() == before


def test_failure_after_blobs_are_written_leaves_no_visible_trace(registry, monkeypatch):
    """A crash between the blob writes and the commit: the transaction rolls back, readers
    see nothing new; at most an unreferenced blob remains, which nothing serves by name."""
    alice = registry.user("alice")
    key = new_key()
    publish(registry, alice, patch_bytes(version="1.0.0"), key, pem(key))
    before = registry.state()
    index_before = registry.client.get("/api/v1/patches/refusal").content
    timestamp_before = registry.client.get("/tuf/metadata/timestamp.json").content

    import llmpatch.registry.tuf_repo as tuf_repo

    def crash(self, session):
        raise RuntimeError("simulated crash while signing")

    monkeypatch.setattr(tuf_repo.TufRepository, "targets_changed", crash)
    response = publish(registry, alice, patch_bytes(version="1.1.0", seed=1), key)
    assert response.status_code == 500
    assert response.json() == {"error": {"code": "internal_error", "message": "internal server error"}}

    after = registry.state()
    assert {k: v for k, v in after.items() if k != "blobs"} == {k: v for k, v in before.items() if k != "blobs"}
    assert set(before["blobs"]) <= set(after["blobs"])  # orphans allowed, nothing removed
    assert registry.client.get("/api/v1/patches/refusal").content == index_before
    assert registry.client.get("/tuf/metadata/timestamp.json").content == timestamp_before

    monkeypatch.undo()  # the retry after the crash succeeds normally
    assert publish(registry, alice, patch_bytes(version="1.1.0", seed=1), key).status_code == 201
