"""gunicorn settings used by bin/render-web (``--config python:comms_platform.gunicorn_conf``).

The access log keeps no personal data: request lines and referrers lose their query strings
(``?search=%2B1415…``), signed artifact tokens are hidden, and the line format leaves out
the remote user (``PrivateAccessLogger``).

With PROMETHEUS_MULTIPROC_DIR set each worker writes its metrics to files there; when a
worker exits its live gauges must be dropped, or /metrics keeps reporting a dead process.
"""

from __future__ import annotations

import os
import sys

from gunicorn.glogging import Logger


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


# No %(q)s, %(u)s or %(l)s; %(r)s, %(U)s and %(f)s are masked by PrivateAccessLogger.
access_log_format = '%(h)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(M)sms'
logger_class = "comms_platform.gunicorn_conf.PrivateAccessLogger"


class PrivateAccessLogger(Logger):
    """gunicorn's logger with every URL in the access log reduced to its path."""

    def atoms(self, resp, req, environ, request_time):
        from comms_platform.logs import mask_urls

        atoms = super().atoms(resp, req, environ, request_time)
        path = mask_urls(atoms.get("U", ""))
        atoms["U"] = path
        atoms["q"] = ""
        atoms["r"] = f"{atoms.get('m', '-')} {path} {atoms.get('H', '-')}"
        referer = atoms.get("f", "-")
        atoms["f"] = mask_urls(referer.split("?", 1)[0] + ("?[query]" if "?" in referer else ""))
        atoms["{referer}i"] = atoms["f"]
        atoms["{x-twilio-signature}i"] = "-"
        return atoms
