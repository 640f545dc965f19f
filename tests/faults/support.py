"""Helpers for the fault tests: process trees, sweeper runs, a private PostgreSQL."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from tests.support.services import BIN, ROOT, free_port, stop_process, unavailable, wait_for_port


def children_of(pid: int) -> list[int]:
    """Every descendant of ``pid`` (from /proc), deepest last."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def sigkill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL a worker and its pool processes at once, as the OOM killer or a lost host would."""
    for pid in [proc.pid, *children_of(proc.pid)]:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=10)


def sweep(env: dict[str, str]) -> str:
    done = subprocess.run([str(BIN / "python"), "manage.py", "sweep_tasks", "--older-than", "0"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


@contextmanager
def celery_beat(env: dict[str, str], workdir: str) -> Iterator[subprocess.Popen]:
    """Celery beat, as deployed (its schedule file in ``workdir``): it sends the sweeper's runs."""
    log = open(os.path.join(workdir, "beat.log"), "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [str(BIN / "celery"), "-A", "comms_platform", "beat", "-l", "INFO",
         "-s", os.path.join(workdir, "beat-schedule")],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        yield proc
    finally:
        stop_process(proc)
        log.close()


def _pg(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the ``postgres`` user then."""
    if os.geteuid() != 0:
        return cmd
    if not shutil.which("runuser"):
        unavailable("running as root and no runuser to start PostgreSQL as another user")
    return ["runuser", "-u", "postgres", "--", *cmd]


def pg_start(datadir: str, port: int) -> None:
    opts = f"-p {port} -k {datadir} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
    subprocess.run(_pg(["pg_ctl", "-D", datadir, "-l", f"{datadir}/server.log", "-o", opts, "-w", "start"]),
                   check=True, capture_output=True)  # fmt: skip


@contextmanager
def postgres_server(port: int | None = None, datadir: str | None = None) -> Iterator[tuple[str, int, str]]:
    """A private PostgreSQL (initdb + pg_ctl in a temporary folder) on its own port.

    Yields (database URL of the ``postgres`` database, port, data directory). Start it again on
    the same port and folder to model a restart.
    """
    for tool in ("initdb", "pg_ctl"):
        if not shutil.which(tool):
            unavailable(f"needs the {tool} binary to start a private PostgreSQL")
    port = port or free_port()
    if datadir is None:
        datadir = tempfile.mkdtemp(prefix="pg-fault-")
        if os.geteuid() == 0:
            shutil.chown(datadir, "postgres", "postgres")
        done = subprocess.run(_pg(["initdb", "-D", datadir, "-U", "postgres", "--auth=trust", "-E", "UTF8"]),
                              capture_output=True, text=True)  # fmt: skip
        if done.returncode != 0:
            unavailable(f"initdb failed: {done.stderr[-300:]}")
    pg_start(datadir, port)
    try:
        wait_for_port(port)
        yield f"postgres://postgres@127.0.0.1:{port}/postgres", port, datadir
    finally:
        subprocess.run(_pg(["pg_ctl", "-D", datadir, "-m", "immediate", "-w", "stop"]), capture_output=True)
        shutil.rmtree(datadir, ignore_errors=True)


def pg_stop(datadir: str) -> None:
    subprocess.run(
        _pg(["pg_ctl", "-D", datadir, "-m", "fast", "-w", "stop"]), check=True, capture_output=True
    )


__all__ = [
    "celery_beat",
    "children_of",
    "pg_start",
    "pg_stop",
    "postgres_server",
    "sigkill_tree",
    "stop_process",
    "sweep",
]
