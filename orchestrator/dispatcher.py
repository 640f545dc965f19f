"""A per-process background dispatcher: sends committed tasks to the broker in batches.

Intake commits the task row and hands its id here; a daemon thread drains the queue
(waiting up to LINGER_SECONDS for a batch to fill), sends one Celery message per task
through one Redis pipeline and records pending → routed → queued for the whole batch in
one statement. The request never waits for the broker. If the process dies
before the batch is sent, the tasks are still ``pending`` and the sweeper sends them.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time
from typing import Any

from django.db import close_old_connections, connections

log = logging.getLogger(__name__)

BATCH = 200
LINGER_SECONDS = 0.005  # how long a batch waits for company: dispatch latency vs cost per task
_STOP = object()


class BackgroundDispatcher:
    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._pending = 0
        self._done = threading.Condition()

    def submit(self, item: Any) -> None:
        """Queue a task id, or a (task id, status, type) row when the caller knows it."""
        self._ensure_thread()
        with self._done:
            self._pending += 1
        self._queue.put(item)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything submitted so far was handled (used at exit and in tests)."""
        with self._done:
            return self._done.wait_for(lambda: self._pending == 0, timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Finish what was submitted, close the thread's database connection and end it."""
        thread = self._thread
        if thread is None or not thread.is_alive() or self._pid != os.getpid():
            return
        self._queue.put(_STOP)
        thread.join(timeout)

    def _ensure_thread(self) -> None:
        # After a fork (gunicorn, Celery prefork) the thread does not exist in the child.
        if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._queue = queue.SimpleQueue()
                self._pending = 0
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name="task-dispatcher", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            # Linger a moment for more: a batch costs one broker round trip and one
            # statement whatever its size, so under load tasks go out by the dozen.
            deadline = time.monotonic() + LINGER_SECONDS
            while len(batch) < BATCH and batch[-1] is not _STOP:
                remaining = deadline - time.monotonic()
                try:
                    batch.append(
                        self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                    )
                except queue.Empty:
                    break
            stopping = batch[-1] is _STOP
            if stopping:
                batch.pop()
            if batch:
                self._send(batch)
            with self._done:
                self._pending -= len(batch)
                self._done.notify_all()
            if stopping:
                connections.close_all()
                return

    @staticmethod
    def _send(batch: list[Any]) -> None:
        from comms_platform.dbhealth import replace_broken_connections
        from orchestrator.services import dispatch_tasks, send_tasks

        try:
            close_old_connections()
            replace_broken_connections()  # after a database restart, not only after an error
            known = [item for item in batch if isinstance(item, tuple)]
            ids = [item for item in batch if not isinstance(item, tuple)]
            if known:
                send_tasks(known)
            if ids:
                dispatch_tasks(task_ids=ids)
        except Exception:
            # The tasks stay pending; the sweeper sends them. Never let the thread die.
            log.exception("background dispatch of %d task(s) failed; the sweeper will retry", len(batch))


dispatcher = BackgroundDispatcher()
atexit.register(dispatcher.stop)
