"""gunicorn settings used by bin/render-web (``--config python:comms_platform.gunicorn_conf``).

With PROMETHEUS_MULTIPROC_DIR set each worker writes its metrics to files there; when a
worker exits its live gauges must be dropped, or /metrics keeps reporting a dead process.
"""

from __future__ import annotations

import os


def child_exit(server, worker) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
