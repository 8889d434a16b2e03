"""`patches.toml` and `patches.lock`: round trips and the errors for bad files."""

from __future__ import annotations

import pytest

from llmpatch.client._lockfile import Lock, LockedPatch, RegistryState
from llmpatch.client._project import Project, ProjectError, open_project


def test_project_round_trip_keeps_order_and_hub_tables(tmp_path):
    project = Project(tmp_path, "smollm2", token_budget=100)
    project.set("toxicity", "1.2")
    project.set("Harm_Fulness", "^1")
    project.set("fix", {"hf": "acme/fix", "revision": "abc"})
    project.set("harm-fulness", "^2")  # same canonical name: replaced in place
    project.save()
    loaded = Project.load(tmp_path)
    assert loaded.patches == {"toxicity": "1.2", "Harm_Fulness": "^2", "fix": {"hf": "acme/fix", "revision": "abc"}}
    assert [str(r) for r in loaded.requests()] == ["toxicity@1.2", "Harm_Fulness@^2"]
    assert loaded.token_budget == 100 and loaded.model == "smollm2"


@pytest.mark.parametrize("text, message", [
    ("[project]\n", "has no `model` under `[project]`"),
    ('[project]\nmodel = "m"\ntoken_budget = 0\n', "`token_budget` in `"),
    ('[project]\nmodel = "m"\n[patches]\nx = 3\n', "patch `x` in `"),
    ('[project]\nmodel = "m"\n[patches]\nx = "^^1"\n', "`^^1` is not a version range"),
    ("not toml =", "is not valid TOML"),
])
def test_bad_project_files(tmp_path, text, message):
    (tmp_path / "patches.toml").write_text(text)
    with pytest.raises(Exception) as info:
        Project.load(tmp_path)
    assert message in str(info.value)


def test_project_for_another_model_is_refused(tmp_path):
    Project(tmp_path, "smollm2").save()
    with pytest.raises(ProjectError, match="is for model `smollm2`, not `gemma3-270m`"):
        open_project(tmp_path, "gemma3-270m")


def test_per_model_state_outside_projects(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    project = open_project(None, "smollm2", create=True)
    assert project.per_model and "models" in str(project.root)


def test_lock_round_trip(tmp_path):
    entry = LockedPatch("toxicity", "1.2.1", "a" * 64, 10, "b" * 64, "c" * 64, "default", "sha256:" + "d" * 64,
                        "sha256:" + "e" * 64, 4, 32, ["base@^1"], [], ["you"], True, "bad")
    lock = Lock("smollm2", "sha256:" + "d" * 64, "sha256:" + "e" * 64, {"toxicity": "1.2"}, 50,
                {"default": RegistryState("http://x", 1, 2, 3, 4)}, [entry])
    lock.save(tmp_path / "patches.lock")
    assert Lock.load(tmp_path / "patches.lock") == lock
    assert Lock.load(tmp_path / "missing.lock") is None


def test_lock_from_the_future_is_refused(tmp_path):
    (tmp_path / "patches.lock").write_text("version = 9\n")
    with pytest.raises(ProjectError, match="has lock version 9; this llm-patch reads 1"):
        Lock.load(tmp_path / "patches.lock")


def test_project_lock_serialises_commands(tmp_path):
    import threading
    import time

    from llmpatch.client._project import project_lock

    project = Project(tmp_path, "smollm2")
    order, waits = [], []

    def second():
        with project_lock(project, on_wait=waits.append):
            order.append("second")

    with project_lock(project):
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.3)
        order.append("first done")
    thread.join(5)
    assert order == ["first done", "second"]
    assert waits == [f"waiting for another `patch` command working on `{tmp_path}`"]
