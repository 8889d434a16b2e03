"""Where llm-patch keeps its files. `LLMPATCH_HOME` puts everything under one folder
(tests and CI use it); otherwise the platform's user config, data and cache folders."""

import os
from pathlib import Path

import platformdirs

APP = "llm-patch"


def _home() -> Path | None:
    home = os.environ.get("LLMPATCH_HOME")
    return Path(home).expanduser() if home else None


def config_dir() -> Path:
    home = _home()
    return home / "config" if home else Path(platformdirs.user_config_dir(APP))


def data_dir() -> Path:
    home = _home()
    return home / "data" if home else Path(platformdirs.user_data_dir(APP))


def cache_dir() -> Path:
    home = _home()
    return home / "cache" if home else Path(platformdirs.user_cache_dir(APP))


def model_cache_dir() -> Path:
    """Dequantised GGUF models (hundreds of MB each): `LLMPATCH_MODEL_CACHE` or the cache folder."""
    override = os.environ.get("LLMPATCH_MODEL_CACHE")
    return Path(override).expanduser() if override else cache_dir() / "models"


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write by temp file + `os.replace`, so readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
