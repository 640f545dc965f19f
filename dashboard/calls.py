"""Operator actions on live calls."""

from __future__ import annotations

import logging

from orchestrator.models import Task
from orchestrator.services import task_cancel

log = logging.getLogger(__name__)


def hang_up(task: Task) -> bool:
    """Ask the voice provider to end the call of ``task``. Returns True when it was asked.

    The hook the voice agent implements: its Twilio provider updates the call to
    ``status=completed`` (the simulator just stops). Until that lands, there is nothing to
    ask, and ``call_hang_up`` cancelling the task is what ends it on our side.
    """
    try:
        from agents.voice.providers import hang_up as provider_hang_up  # type: ignore[import-not-found]
    except ImportError:
        return False
    provider_hang_up(task)
    return True


def call_hang_up(*, task_id: str, actor: str) -> Task:
    """The hang-up button: ask the provider, then cancel the task (stale if already finished)."""
    task = Task.objects.get(id=task_id)
    try:
        asked = hang_up(task)
    except Exception:  # the provider failing must not keep the operator from cancelling
        log.warning("hang-up of call task %s failed at the provider", task_id, exc_info=True)
        asked = False
    return task_cancel(
        task_id=task_id, actor=actor, reason=f"hung up by operator (provider asked: {asked})"
    ).task
