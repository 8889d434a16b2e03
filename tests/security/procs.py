"""`patch registry serve` and `patch registry ...` as real subprocesses (for SIGKILL and RSS)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

PATCH = str(Path(sys.executable).with_name("patch"))
KILLS = 10  # SIGKILLs per fault test


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(data_dir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([PATCH, "registry", "serve", "--port", str(port), "--data-dir", str(data_dir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/tuf/metadata/1.root.json", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"`patch registry serve` exited with {proc.returncode}")
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the registry did not start within 30 s")


def kill9(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


def registry_cli(*args) -> dict:
    out = subprocess.run([PATCH, "registry", *args, "--json"], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


