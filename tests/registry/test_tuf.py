"""The registry's TUF metadata, consumed by python-tuf's own client against the real server."""

from __future__ import annotations

import json
import pytest
from tuf.api.exceptions import BadVersionNumberError
from tuf.ngclient import Updater, Urllib3Fetcher

from datetime import datetime, timezone

from sqlalchemy import update

from llmpatch.registry.models import TufMetadata
from llmpatch.registry.tuf_repo import TufRepository

from .factories import ARCH, new_key, patch_bytes, pem, upload


class ReplayingFetcher(Urllib3Fetcher):
    """A mirror that serves a stale `timestamp.json` (a rollback / freeze attack)."""

    def __init__(self, stale_timestamp: bytes):
        super().__init__()
        self.stale = stale_timestamp

    def _fetch(self, url):
        if url.endswith("/timestamp.json"):
            return iter([self.stale])
        return super()._fetch(url)


def _updater(registry, tmp_path, name="client", fetcher=None) -> Updater:
    """An ngclient Updater with 1.root.json embedded, as a shipped client would have it."""
    metadata_dir = tmp_path / name / "metadata"
    metadata_dir.mkdir(parents=True, exist_ok=True)
    (tmp_path / name / "targets").mkdir(exist_ok=True)
    root = registry.client.get("/tuf/metadata/1.root.json").content
    return Updater(str(metadata_dir), f"{registry.url}/tuf/metadata/", str(tmp_path / name / "targets"),
                   f"{registry.url}/tuf/targets/", fetcher=fetcher, bootstrap=root)


def test_ngclient_refreshes_and_downloads_patch_and_signature(registry, tmp_path):
    alice = registry.user("alice")
    key = new_key()
    data = patch_bytes("refusal", "1.2.0")
    files = upload(data, key, pem(key))
    published = registry.client.post("/api/v1/patches", files=files, headers=alice).json()

    updater = _updater(registry, tmp_path)
    updater.refresh()
    info = updater.get_targetinfo("refusal/refusal-1.2.0.safetensors")
    assert info is not None and info.length == len(data)
    custom = info.unrecognized_fields["custom"]
    assert custom["name"] == "refusal" and custom["version"] == "1.2.0" and custom["yanked"] is False
    assert custom["key_id"] == published["key_id"] and custom["base_model"]["architecture"] == ARCH
    path = updater.download_target(info)
    assert open(path, "rb").read() == data

    sig_info = updater.get_targetinfo("refusal/refusal-1.2.0.safetensors.sig")
    assert sig_info.unrecognized_fields["custom"]["kind"] == "signature"
    assert json.loads(open(updater.download_target(sig_info), "rb").read())["key_id"] == published["key_id"]
    assert updater.get_targetinfo("refusal/refusal-9.9.9.safetensors") is None


def test_yank_is_visible_in_signed_targets(registry, tmp_path):
    alice = registry.user("alice")
    key = new_key()
    registry.client.post("/api/v1/patches", files=upload(patch_bytes(), key, pem(key)), headers=alice)
    updater = _updater(registry, tmp_path)
    updater.refresh()
    assert updater.get_targetinfo("refusal/refusal-1.0.0.safetensors").unrecognized_fields["custom"]["yanked"] is False

    registry.client.post("/api/v1/patches/refusal/versions/1.0.0/yank", json={"reason": "broken"}, headers=alice)
    updater = _updater(registry, tmp_path)  # same local metadata dir: an update, not a fresh start
    updater.refresh()
    custom = updater.get_targetinfo("refusal/refusal-1.0.0.safetensors").unrecognized_fields["custom"]
    assert (custom["yanked"], custom["yank_reason"]) == (True, "broken")


def test_client_detects_rollback_of_timestamp(registry, tmp_path):
    """A server (or mirror) replaying an older timestamp is refused by the client."""
    alice = registry.user("alice")
    key = new_key()
    old_timestamp = registry.client.get("/tuf/metadata/timestamp.json").content
    registry.client.post("/api/v1/patches", files=upload(patch_bytes(), key, pem(key)), headers=alice)
    updater = _updater(registry, tmp_path)
    updater.refresh()

    metadata_dir = tmp_path / "client" / "metadata"
    trusted = (metadata_dir / "timestamp.json").read_bytes()

    stale = _updater(registry, tmp_path, fetcher=ReplayingFetcher(old_timestamp))
    with pytest.raises(BadVersionNumberError):
        stale.refresh()
    assert (metadata_dir / "timestamp.json").read_bytes() == trusted  # local state unchanged


def test_metadata_versions_and_expiry(registry):
    timestamp = json.loads(registry.client.get("/tuf/metadata/timestamp.json").content)["signed"]
    snapshot = json.loads(registry.client.get(f"/tuf/metadata/{timestamp['meta']['snapshot.json']['version']}.snapshot.json").content)["signed"]
    root = json.loads(registry.client.get("/tuf/metadata/1.root.json").content)["signed"]
    assert root["consistent_snapshot"] is True
    assert {role: r["threshold"] for role, r in root["roles"].items()} == {"root": 1, "targets": 1, "snapshot": 1, "timestamp": 1}
    assert snapshot["meta"]["targets.json"]["version"] == 1
    assert registry.client.get("/tuf/metadata/1.targets.json").status_code == 200
    assert registry.client.get("/tuf/metadata/2.targets.json").status_code == 404
    assert registry.client.get("/tuf/metadata/timestamp.json").headers["cache-control"] == "no-cache"


def test_refresh_resigns_only_when_due(registry):
    repo = TufRepository(registry.settings.tuf_key_dir)
    assert repo.refresh(registry._db) is False  # fresh metadata: nothing to do

    with registry._db.writer() as session:  # pretend the timestamp is about to expire
        session.execute(update(TufMetadata).where(TufMetadata.role == "timestamp")
                        .values(expires=datetime.now(timezone.utc)))
    assert repo.refresh(registry._db) is True
    assert json.loads(registry.client.get("/tuf/metadata/timestamp.json").content)["signed"]["version"] == 2
