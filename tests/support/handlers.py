"""Handlers used only by tests (importable by worker processes started from the repo root)."""

from __future__ import annotations

import os
import signal

from orchestrator.models import Task


def crash_worker(task: Task) -> None:
    """Kill the worker process that runs it, as an out-of-memory kill would."""
    os.kill(os.getpid(), signal.SIGKILL)


def fail_permanently(task: Task) -> None:
    from orchestrator.errors import PermanentError

    raise PermanentError(f"{task.type} cannot reach {task.payload.get('to')}", code="unreachable")


def succeed(task: Task) -> None:
    from orchestrator.services import task_transition

    task_transition(task_id=task.id, to="succeeded", actor="test-agent", provider_id=f"T-{task.id.hex[:8]}")


def accept_and_wait(task: Task) -> None:
    """The provider accepted it; no delivery report ever comes."""
    from orchestrator.services import task_transition

    task_transition(task_id=task.id, to="in_progress", actor="test-agent")
