"""Workers keep a working database connection across tasks, whatever happened to the server.

Celery keeps Django's connection between tasks (``CELERY_DB_REUSE_MAX``) and never calls
``close_old_connections``, so Django's own checks never run in a worker: after a PostgreSQL
restart the kept connection is dead, and the next task fails on entering ``atomic()`` (where
Django's broken-connection handling does not run). Here, before each task and after one that
failed, every open connection is checked (``is_usable``: a socket poll on PostgreSQL, a
``SELECT 1`` only when the server left a message) and a broken one is closed, so the task
opens a fresh one.

``is_database_error`` tells a lost or unreachable database from a handler's error: the task
is then retried later instead of being failed (the database is not the task's fault).
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import DatabaseError, InterfaceError, OperationalError, connections

log = logging.getLogger(__name__)


def replace_broken_connections() -> int:
    """Close every open connection that no longer works (outside a transaction); returns how many."""
    closed = 0
    for conn in connections.all(initialized_only=True):
        if conn.connection is None or conn.in_atomic_block:
            continue
        try:
            usable = conn.is_usable()
        except Exception:
            usable = False
        if not usable:
            try:
                conn.close()
            except DatabaseError:
                conn.connection = None  # already gone: forget it, the next query reconnects
            closed += 1
    if closed:
        log.warning("database connection lost: replaced %d connection(s)", closed)
    return closed


def is_database_error(exc: BaseException) -> bool:
    """The database is unreachable or the connection broke (not a constraint or a bad query)."""
    return isinstance(exc, OperationalError | InterfaceError)


def on_task_prerun(**kwargs: Any) -> None:
    replace_broken_connections()


def on_task_failure(**kwargs: Any) -> None:
    replace_broken_connections()


def connect_worker_signals() -> None:
    """Connect before any other task_prerun receiver (the log context reads the task row)."""
    from celery.signals import task_failure, task_prerun, task_retry

    task_prerun.connect(on_task_prerun, weak=False, dispatch_uid="comms-db-prerun")
    task_failure.connect(on_task_failure, weak=False, dispatch_uid="comms-db-failure")
    task_retry.connect(on_task_failure, weak=False, dispatch_uid="comms-db-retry")
