"""Real services for integration tests: which are available, and processes to start.

On the embedded default (no PostgreSQL/Redis) the tests that need them are skipped with
the reason; with REQUIRE_SERVICES=1 (CI) they fail instead.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
REQUIRE = os.environ.get("REQUIRE_SERVICES") == "1"


def unavailable(reason: str) -> None:
    if REQUIRE:
        pytest.fail(f"REQUIRE_SERVICES=1: {reason}")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def wait_until(predicate, timeout: float = 20.0, interval: float = 0.05, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


def database_url_for_subprocess() -> str:
    """The URL of the (test) database this test process uses, for child processes."""
    from django.db import connection

    s = connection.settings_dict
    if connection.vendor != "postgresql":
        unavailable(
            "needs PostgreSQL (set DATABASE_URL=postgres://…) so that other processes share the database"
        )
    host = s.get("HOST") or "127.0.0.1"
    port = s.get("PORT") or 5432
    auth = s.get("USER") or "postgres"
    if s.get("PASSWORD"):
        auth += f":{s['PASSWORD']}"
    return f"postgres://{auth}@{host}:{port}/{s['NAME']}"


@contextmanager
def redis_server(port: int | None = None) -> Iterator[tuple[str, int, subprocess.Popen]]:
    """A private redis-server on its own port (the machine's shared one stays up)."""
    if not shutil.which("redis-server"):
        unavailable("needs the redis-server binary to start a private Redis")
    port = port or free_port()
    workdir = tempfile.mkdtemp(prefix="redis-test-")
    proc = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", workdir, "--maxmemory-policy", "noeviction"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(port, proc=proc)
        yield f"redis://127.0.0.1:{port}/0", port, proc
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def platform_env(**overrides: str) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "DJANGO_SETTINGS_MODULE": "comms_platform.settings",
        "COMMS_MODE": "test",
        "DATABASE_URL": database_url_for_subprocess(),
        "PYTHONUNBUFFERED": "1",
    }
    env.update(overrides)
    return env


@contextmanager
def celery_worker(env: dict[str, str], queues: str = "orchestrator,voice,messaging,email,content,remote,webhooks",
                  concurrency: int = 1, log_path: Path | None = None) -> Iterator[subprocess.Popen]:  # fmt: skip
    """A real Celery worker process (prefork) on the given queues."""
    if log_path is None:
        log_path = Path(tempfile.mkdtemp(prefix="celery-")) / "worker.log"
    log = open(log_path, "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [str(BIN / "celery"), "-A", "comms_platform", "worker", "-l", "INFO", "-Q", queues,
         "-c", str(concurrency), "-P", "prefork", "--without-gossip", "--without-mingle", "--without-heartbeat",
         "-n", f"test-{free_port()}@%h"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        yield proc
    finally:
        stop_process(proc, timeout=15)
        log.close()


@contextmanager
def web_server(env: dict[str, str]) -> Iterator[str]:
    """The WSGI app under gunicorn, as in production. Yields its base URL."""
    port = free_port()
    env = {**env, "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}"}
    proc = subprocess.Popen(
        [str(BIN / "gunicorn"), "comms_platform.wsgi:application", "-b", f"127.0.0.1:{port}", "-w", "1",
         "--threads", "4", "--timeout", "30"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(port, proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)


# Transactional tests flush the database afterwards; serialized_rollback puts the rows of
# the data migrations (the agent registry) back first.
transactional_db = pytest.mark.django_db(transaction=True, serialized_rollback=True)
