"""Throughput and latency of the registry's per-patch index endpoint against pypiserver's
`/simple/<pkg>/`, on this machine, in one run.

    python benchmarks/registry_index.py [--duration 5] [--connections 2,16] [--backends sqlite,postgresql]

Each server runs in its own process on 127.0.0.1; the load comes from `wrk` (Debian package
`wrk`) in another process, or from a small asyncio/httpx generator if wrk is missing. Both
serve an index of five versions. PostgreSQL gets a throw-away database, dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN = os.environ.get("LLMPATCH_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
VERSIONS = ["1.0.0", "1.1.0", "1.2.0", "1.3.0", "1.4.0"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"`{url}` not ready after {timeout}s")


def seed_registry(data_dir: Path, db_url: str) -> None:
    """Publish five versions of `refusal` through the real API, in-process."""
    sys.path.insert(0, str(ROOT))
    from fastapi.testclient import TestClient

    from llmpatch.registry import Settings, create_app
    from llmpatch.registry.auth import create_token, create_user
    from llmpatch.registry.db import upgrade
    from tests.registry.factories import new_key, patch_bytes, pem, upload

    if db_url:
        upgrade(db_url)
    app = create_app(Settings(data_dir=data_dir, db_url=db_url))
    with app.state.db.writer() as session:
        _, token = create_token(session, create_user(session, "bench"), ["publish:*"])
    key = new_key()
    with TestClient(app) as client:
        for i, version in enumerate(VERSIONS):
            files = upload(patch_bytes("refusal", version, seed=i, domains=("toxicity",), evaluation={"refusal_rate": 0.9}),
                           key, pem(key) if i == 0 else None)
            response = client.post("/api/v1/patches", files=files, headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 201, response.text
    app.state.db.dispose()


def start_registry(data_dir: Path, db_url: str, workers: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cli = Path(sys.executable).parent / "llm-patch"
    args = [str(cli), "registry", "serve", "--port", str(port), "--data-dir", str(data_dir), "--workers", str(workers)]
    if db_url:
        args += ["--db", db_url]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/api/v1/patches/refusal"
    wait_ready(url, process)
    return process, url


def start_pypiserver(packages: Path, server: str) -> tuple[subprocess.Popen, str]:
    for version in VERSIONS:
        (packages / f"refusal-{version}.tar.gz").write_bytes(os.urandom(700))
    port = free_port()
    cli = Path(sys.executable).parent / "pypi-server"
    process = subprocess.Popen([str(cli), "run", "-p", str(port), "-i", "127.0.0.1", "-a", ".", "-P", ".",
                                "--disable-fallback", "--server", server, str(packages)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/simple/refusal/"
    wait_ready(url, process)
    return process, url


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def run_wrk(url: str, connections: int, duration: float) -> dict:
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{int(duration)}s", "--latency", url],
                         capture_output=True, text=True, timeout=duration + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = {p: float(v) * _UNITS[u] for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50": lat["50"], "p99": lat["99"], "errors": int(errors.group(1)) if errors else 0}


async def _python_load(url: str, connections: int, duration: float) -> dict:
    latencies: list[float] = []
    errors = 0
    stop = time.monotonic() + duration

    async def worker(client):
        nonlocal errors
        while time.monotonic() < stop:
            start = time.perf_counter()
            response = await client.get(url)
            latencies.append((time.perf_counter() - start) * 1e3)
            errors += response.status_code != 200

    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=connections)) as client:
        await asyncio.gather(*(worker(client) for _ in range(connections)))
    latencies.sort()
    return {"rps": len(latencies) / duration, "p50": statistics.median(latencies),
            "p99": latencies[int(len(latencies) * 0.99) - 1], "errors": errors}


def run_load(url: str, connections: int, duration: float) -> dict:
    if shutil.which("wrk"):
        return run_wrk(url, connections, duration)
    # Fallback: the Python generator in its own process, so it does not share the server's GIL.
    code = (f"import asyncio, json, sys; sys.path.insert(0, {str(ROOT)!r}); "
            f"from benchmarks.registry_index import _python_load; "
            f"print(json.dumps(asyncio.run(_python_load({url!r}, {connections}, {duration}))))")
    import json

    return json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--connections", default="2,16")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--workers", type=int, default=1, help="registry uvicorn workers")
    parser.add_argument("--pypi-server", default="auto", help="pypiserver's --server (auto picks waitress if installed, else wsgiref)")
    args = parser.parse_args()
    connections = [int(c) for c in args.connections.split(",")]
    generator = "wrk" if shutil.which("wrk") else "python asyncio/httpx"
    print(f"# {os.cpu_count()} CPUs, load generator: {generator}, {args.duration:g}s per run, registry workers: {args.workers}")

    results: dict[tuple[str, int], dict] = {}
    with tempfile.TemporaryDirectory(prefix="llmpatch-bench-") as tmp:
        tmp = Path(tmp)
        (tmp / "pypi").mkdir()
        process, url = start_pypiserver(tmp / "pypi", args.pypi_server)
        try:
            for c in connections:
                run_load(url, c, 1)  # warm up
                results[("pypiserver", c)] = run_load(url, c, args.duration)
        finally:
            stop(process)

        for backend in args.backends.split(","):
            db_url, admin, db_name = "", None, None
            if backend == "postgresql":
                from sqlalchemy import create_engine, text

                db_name = f"llmpatch_bench_{uuid.uuid4().hex[:8]}"
                admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
                with admin.connect() as connection:
                    connection.execute(text(f'CREATE DATABASE "{db_name}"'))
                db_url = PG_ADMIN.rsplit("/", 1)[0] + "/" + db_name
            try:
                data_dir = tmp / backend
                seed_registry(data_dir, db_url)
                process, url = start_registry(data_dir, db_url, args.workers)
                try:
                    for c in connections:
                        run_load(url, c, 1)
                        results[(f"registry/{backend}", c)] = run_load(url, c, args.duration)
                finally:
                    stop(process)
            finally:
                if admin is not None:
                    from sqlalchemy import text

                    with admin.connect() as connection:
                        connection.execute(text(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)'))
                    admin.dispose()

    print(f"{'server':<22} {'conns':>5} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} {'vs pypiserver':>14}")
    for (server, c), r in results.items():
        peer = results.get(("pypiserver", c))
        ratio = f"{r['rps'] / peer['rps']:.2f}x" if peer and server != "pypiserver" else ""
        print(f"{server:<22} {c:>5} {r['rps']:>9.0f} {r['p50']:>8.2f} {r['p99']:>8.2f} {r['errors']:>6} {ratio:>14}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
