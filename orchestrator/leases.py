"""Short task leases, renewed while the task runs.

A claimed task holds a lease of TASK_LEASE_SECONDS (default 20 s). While its handler runs, a
thread of the worker process pushes the lease forward every TASK_LEASE_RENEW_SECONDS. A worker
that dies (SIGKILL, OOM, a lost host) stops renewing: its lease runs out within
TASK_LEASE_SECONDS and the sweeper's next round retakes the task, instead of waiting for a lease
as long as the longest task.

The renewal is conditional on the lease still being the one it set last: a task released for a
retry (``task_release`` moves the lease to the retry's due time) or finished is never extended.
"""

from __future__ import annotations

import logging
import os
import threading
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone

log = logging.getLogger(__name__)


class LeaseKeeper:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, datetime] = {}
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def hold(self, task_id: Any, lease_expires_at: datetime) -> None:
        """Keep renewing this task's lease (set by its claim) until ``drop``."""
        self._ensure_thread()
        with self._lock:
            self._held[str(task_id)] = lease_expires_at

    def drop(self, task_id: Any) -> None:
        with self._lock:
            self._held.pop(str(task_id), None)

    def held(self) -> list[str]:
        with self._lock:
            return list(self._held)

    def renew(self) -> int:
        """Extend every held lease that is still ours; returns how many were extended."""
        from orchestrator.models import Task
        from orchestrator.states import TaskStatus

        with self._lock:
            held = dict(self._held)
        renewed = 0
        for task_id, expected in held.items():
            new = timezone.now() + timedelta(seconds=settings.TASK_LEASE_SECONDS)
            moved = Task.objects.filter(
                id=task_id, status=TaskStatus.DISPATCHED, lease_expires_at=expected
            ).update(lease_expires_at=new)
            with self._lock:
                if task_id not in self._held:
                    continue
                if moved:
                    self._held[task_id] = new
                    renewed += 1
                else:  # released for a retry, finished, or retaken: no longer ours to keep
                    self._held.pop(task_id, None)
        return renewed

    def _ensure_thread(self) -> None:
        # Celery's prefork pool forks after import: each pool process starts its own thread.
        if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._held = {}
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        from comms_platform.dbhealth import replace_broken_connections

        while True:
            self._wake.wait(settings.TASK_LEASE_RENEW_SECONDS)
            try:
                replace_broken_connections()
                if self.held():
                    self.renew()
            except Exception as exc:  # the database away: the lease may run out, which is safe
                log.warning("lease renewal failed (%s)", type(exc).__name__)
                connection.close()


keeper = LeaseKeeper()
