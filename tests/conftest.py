import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/tiny_models.py, tests/patches.py

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(autouse=True, scope="session")
def shared_model_cache():
    """Dequantised real models are shared by all tests and kept between runs (~20 s to make)."""
    import os

    import platformdirs

    os.environ.setdefault("LLMPATCH_MODEL_CACHE", str(Path(platformdirs.user_cache_dir("llm-patch")) / "models"))


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
