"""gunicorn settings used by bin/render-web (``--config python:comms_platform.gunicorn_conf``).

With PROMETHEUS_MULTIPROC_DIR set each worker writes its metrics to files there; when a
worker exits its live gauges must be dropped, or /metrics keeps reporting a dead process.
"""

from __future__ import annotations

import os
import sys


def child_exit(server, worker) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def on_starting(server) -> None:
    """Test mode serves this machine only (comms_platform/testmode.py)."""
    from comms_platform import testmode

    if os.environ.get("COMMS_MODE", "test") != "test":
        return
    if os.environ.get("ALLOW_TEST_MODE_ON_NETWORK", "").lower() in ("1", "true", "yes", "on"):
        return
    problem = testmode.bind_problem(list(server.cfg.bind))
    if problem:
        sys.exit(problem)
