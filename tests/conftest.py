import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/tiny_models.py, tests/patches.py

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory, monkeypatch):
    """Every test gets its own key store, caches and state (LLMPATCH_HOME)."""
    home = tmp_path_factory.mktemp("llmpatch-home")
    monkeypatch.setenv("LLMPATCH_HOME", str(home))
    monkeypatch.delenv("LLMPATCH_KEY_PASSPHRASE", raising=False)
    return home


@pytest.fixture
def rng():
    return np.random.default_rng(0)
