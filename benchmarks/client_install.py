"""Wall time of `patch install` of one small patch from a local registry, cold and warm cache,
against `pip install --no-deps` and `uv pip install --no-deps` of a small wheel from a local
pypiserver, in the same run on the same machine.

    python benchmarks/client_install.py [--rounds N] [--json out.json]

Each measurement is a fresh subprocess (the command as a user types it), into a fresh target
(project folder / --target folder). Cold: empty cache (and, for us, no TUF metadata and no
fingerprint cache yet). Warm: the same cache after one install. The tools run interleaved,
round by round; tables give the median and min..max, ratios are median / median.

The model is a tiny Llama-shaped safetensors folder written with numpy (about 30 KB), so
fingerprinting costs what it costs for a small model; for SmolLM2 the first fingerprint is
a one-off ~1 s that is cached afterwards. Needs: the registry and client extras, `pypiserver`
and `uv` (pip install pypiserver uv).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 30.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


# ------------------------------------------------------------------------ fixtures

def tiny_model(folder: Path) -> Path:
    """A Llama-shaped folder: config, one safetensors file, a word-level tokenizer.json."""
    from safetensors.numpy import save_file

    folder.mkdir(parents=True)
    hidden, vocab = 32, 64
    (folder / "config.json").write_text(json.dumps({
        "model_type": "llama", "hidden_size": hidden, "intermediate_size": 64, "num_hidden_layers": 1,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": vocab, "tie_word_embeddings": True,
    }))
    rng = np.random.default_rng(0)
    save_file({"model.embed_tokens.weight": rng.standard_normal((vocab, hidden)).astype(np.float32),
               "model.norm.weight": np.ones(hidden, np.float32)}, str(folder / "model.safetensors"))
    (folder / "tokenizer.json").write_text(json.dumps({"model": {"vocab": {f"w{i}": i for i in range(vocab)}}}))
    return folder


def small_wheel(folder: Path, size: int) -> Path:
    """A valid pure-Python wheel of about `size` bytes (random data module, so it does not compress)."""
    name, version = "tinypkg", "1.0.0"
    dist = f"{name}-{version}.dist-info"
    blob = base64.b64encode(np.random.default_rng(0).bytes(size * 3 // 4)).decode()
    files = {
        f"{name}/__init__.py": f'DATA = "{blob}"\n',
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: bench\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = "\n".join(record) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return wheel


def start_registry(work: Path, model: Path):
    """Our registry in a thread, one patch published, signed by a fresh key. Returns (server, url, patch size)."""
    import uvicorn
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from llmpatch.fingerprint import fingerprint_folder
    from llmpatch.manifest import BaseModelRef, Manifest
    from llmpatch.patchfile import encode_patch, read_patch_bytes
    from llmpatch.registry import Settings, create_app
    from llmpatch.registry.auth import create_token, create_user
    from llmpatch.signing import public_key_to_pem, sign_patch

    app = create_app(Settings(data_dir=work / "registry"))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    url = f"http://127.0.0.1:{server.config.port}"
    with app.state.db.writer() as session:
        _, token = create_token(session, create_user(session, "bench"), ["publish:*"])
    fp = fingerprint_folder(model, use_cache=False)
    manifest = Manifest(name="toxicity", version="1.2.0", base_model=BaseModelRef(fp.architecture, fp.weights, "tiny"),
                        n_virtual_tokens=50, hidden_size=32)
    data = encode_patch(manifest, np.random.default_rng(1).standard_normal((50, 32)).astype(np.float32))
    key = Ed25519PrivateKey.generate()
    import httpx

    response = httpx.post(f"{url}/api/v1/patches", headers={"Authorization": f"Bearer {token}"}, files={
        "file": ("p.safetensors", data, "application/octet-stream"),
        "signature": ("p.sig", sign_patch(read_patch_bytes(data), key).to_json().encode(), "application/json"),
        "public_key": ("k.pem", public_key_to_pem(key.public_key()), "application/x-pem-file"),
    })
    response.raise_for_status()
    return server, url, len(data)


# ------------------------------------------------------------------------ measurement

def timed(cmd: list[str], env: dict, cwd: Path) -> float:
    start = time.perf_counter()
    result = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return elapsed


class Ours:
    label = "patch install"

    def __init__(self, work: Path, url: str, model: Path):
        self.work, self.url, self.model, self.n = work, url, model, 0

    def _home(self) -> Path:
        self.n += 1
        home = self.work / f"home-{self.n}"
        env = dict(os.environ, LLMPATCH_HOME=str(home))
        root = self.work / "1.root.json"
        if not root.exists():
            import httpx

            root.write_bytes(httpx.get(f"{self.url}/tuf/metadata/1.root.json").content)
        subprocess.run([str(BIN / "patch"), "registry", "add", "default", self.url, "--root", str(root)],
                       env=env, check=True, capture_output=True) if _has_registry_add() else _add_in_process(home, self.url, root)
        return home

    def run(self, warm_home: Path | None) -> tuple[float, Path]:
        home = warm_home or self._home()
        project = self.work / f"project-{self.n}-{time.monotonic_ns()}"
        project.mkdir()
        env = dict(os.environ, LLMPATCH_HOME=str(home))
        cmd = [str(BIN / "patch"), "install", "toxicity@1.2", "--model", str(self.model), "--project", str(project)]
        return timed(cmd, env, project), home


def _has_registry_add() -> bool:
    from llmpatch.registry.cli import registry

    return "add" in registry.commands


def _add_in_process(home: Path, url: str, root: Path) -> None:
    """Until `patch registry add` is wired into the registry group: the same call, in-process."""
    old = os.environ.get("LLMPATCH_HOME")
    os.environ["LLMPATCH_HOME"] = str(home)
    try:
        from llmpatch.client._registry import add_registry

        add_registry("default", url, root.read_bytes())
    finally:
        if old is None:
            del os.environ["LLMPATCH_HOME"]
        else:
            os.environ["LLMPATCH_HOME"] = old


class Pip:
    label = "pip install --no-deps"

    def __init__(self, work: Path, index: str, uv: bool = False):
        self.work, self.index, self.uv, self.n = work, index, uv, 0
        self.label = "uv pip install --no-deps" if uv else "pip install --no-deps"

    def run(self, warm_cache: Path | None) -> tuple[float, Path]:
        self.n += 1
        cache = warm_cache or self.work / f"{'uv' if self.uv else 'pip'}-cache-{self.n}"
        target = self.work / f"{'uv' if self.uv else 'pip'}-target-{self.n}-{time.monotonic_ns()}"
        if self.uv:
            cmd = [str(BIN / "uv"), "pip", "install", "--no-deps", "--index-url", self.index, "--target", str(target),
                   "--python", sys.executable, "--cache-dir", str(cache), "tinypkg==1.0.0"]
        else:
            cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check", "--no-input",
                   "--index-url", self.index, "--target", str(target), "--cache-dir", str(cache), "tinypkg==1.0.0"]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
        return timed(cmd, env, self.work), cache


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if shutil.which("uv", path=str(BIN)) is None:
        sys.exit("needs `uv` in this environment: pip install uv")

    work = Path(tempfile.mkdtemp(prefix="llmpatch-bench-"))
    os.environ["LLMPATCH_HOME"] = str(work / "bench-home")
    model = tiny_model(work / "model")
    server, url, patch_size = start_registry(work, model)
    wheel = small_wheel(work / "packages", patch_size)
    port = free_port()
    pypi = subprocess.Popen([str(BIN / "pypi-server"), "run", "-p", str(port), "-i", "127.0.0.1", "-a", ".", "-P", ".",
                             "--disable-fallback", str(work / "packages")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    index = f"http://127.0.0.1:{port}/simple/"
    try:
        wait_http(index)
        tools = [Ours(work, url, model), Pip(work, index), Pip(work, index, uv=True)]
        times: dict[tuple[str, str], list[float]] = {}
        for round_ in range(args.rounds):
            order = tools[round_ % 3:] + tools[: round_ % 3]
            for tool in order:
                cold, state = tool.run(None)
                warm, _ = tool.run(state)
                times.setdefault((tool.label, "cold"), []).append(cold)
                times.setdefault((tool.label, "warm"), []).append(warm)
            print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr)
    finally:
        pypi.terminate()
        pypi.wait(timeout=10)
        server.should_exit = True

    print(f"\nOne {patch_size}-byte patch vs one {wheel.stat().st_size}-byte wheel, local servers, "
          f"{args.rounds} rounds, {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(f"{'tool':28} {'cache':6} {'median s':>9} {'min..max s':>14}")
    medians = {}
    for (label, cache), values in times.items():
        medians[(label, cache)] = statistics.median(values)
        print(f"{label:28} {cache:6} {medians[(label, cache)]:9.3f} {min(values):6.3f}..{max(values):6.3f}")
    print("\nratios (patch install / other, median over median):")
    for cache in ("cold", "warm"):
        ours = medians[("patch install", cache)]
        for other in ("pip install --no-deps", "uv pip install --no-deps"):
            print(f"  {cache}: patch install / {other} = {ours / medians[(other, cache)]:.2f}")
    if args.json:
        args.json.write_text(json.dumps({f"{k[0]} [{k[1]}]": v for k, v in times.items()}, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
