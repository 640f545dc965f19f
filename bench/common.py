"""Shared plumbing for the benchmarks: services, a production-like server, wrk runs."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"nothing listens on {port}")


def bench_env(db_name: str = "comms_bench", redis_db: int = 7) -> dict[str, str]:
    import psycopg

    base = os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432")
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db_name,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{db_name}"')
    env = {
        **os.environ,
        "COMMS_MODE": "test",
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "DATABASE_URL": f"{base}/{db_name}",
        "REDIS_URL": os.environ.get("BENCH_REDIS", f"redis://127.0.0.1:6379/{redis_db}"),
        "LOG_LEVEL": "WARNING",
    }
    subprocess.run([str(BIN / "python"), "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env,
                   check=True)  # fmt: skip
    return env


def manage(env: dict[str, str], *args: str) -> str:
    out = subprocess.run([str(BIN / "python"), "manage.py", *args], cwd=ROOT, env=env, check=True,
                         capture_output=True, text=True)  # fmt: skip
    return out.stdout


@contextmanager
def gunicorn(env: dict[str, str], workers: int = 2, threads: int = 1):
    port = free_port()
    env = {**env, "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}"}
    proc = subprocess.Popen(
        [str(BIN / "gunicorn"), "comms_platform.wsgi:application", "--config", "python:comms_platform.gunicorn_conf",
         "-b", f"127.0.0.1:{port}", "-w", str(workers),
         "--worker-class", "sync" if threads == 1 else "gthread", "--threads", str(threads),
         "--worker-connections", str(2 * threads), "--backlog", "2048", "--log-level", "warning"],
        cwd=ROOT, env=env,
    )  # fmt: skip
    try:
        wait_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait()


def wrk(url: str, *, seconds: int, connections: int, script: str | None = None) -> dict[str, float]:
    """Run wrk and return requests/s, p50 and p99 latency (ms) and the error count."""
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install wrk")
    cmd = ["wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds}s", "--latency"]
    path = None
    if script:
        fd, path = tempfile.mkstemp(suffix=".lua")
        os.write(fd, script.encode())
        os.close(fd)
        cmd += ["-s", path]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    if path:
        os.unlink(path)

    def latency(label: str) -> float:
        m = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50": latency("50"),
        "p99": latency("99"),
        "errors": int(errors.group(1)) if errors else 0,
    }
