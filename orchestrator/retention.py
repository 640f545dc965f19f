"""The orchestrator's purge hook (``comms_platform.purge``): its tasks under the one retention
and erasure policy of ``dossiers.retention``."""

from __future__ import annotations

import contextlib
from typing import Any

from django.db.models import Q, QuerySet

from comms_platform import purge
from orchestrator.models import Digest, DigestStatus, Task, TaskEvent
from orchestrator.services import task_cancel
from orchestrator.states import FINAL, IllegalTransition


def expired(cutoff: purge.Cutoff) -> dict[str, QuerySet]:
    stale = Q(updated_at__lt=cutoff("tasks")) & ~Q(status__in=FINAL)
    return {
        "tasks": Task.objects.filter(status__in=FINAL, finished_at__lt=cutoff("tasks")),
        # Unfinished but untouched for as long (an inbound message resolved before resolving
        # finished its task, a task whose agent vanished): nobody works them any more.
        "abandoned_tasks": Task.objects.filter(stale),
        # Sent (or empty, failed) digests as old as the tasks that go: their items went with them.
        "digests": Digest.objects.exclude(status=DigestStatus.OPEN).filter(flushed_at__lt=cutoff("tasks")),
    }


def _task_ids(contact: Any, identifiers: list[str]) -> list[Any]:
    return list(
        Task.objects.filter(Q(contact=contact) | purge.mentions(identifiers)).values_list("id", flat=True)
    )


def _querysets(task_ids: list[Any]) -> dict[str, QuerySet]:
    return {
        # Nothing may wait for data that is gone (an inbound message in the operators' queue).
        "tasks_cancelled": Task.objects.filter(id__in=task_ids).exclude(status__in=FINAL),
        "tasks_scrubbed": Task.objects.filter(id__in=task_ids),
        "task_events_scrubbed": TaskEvent.objects.filter(task_id__in=task_ids),
    }


def mentioning(contact: Any, identifiers: list[str]) -> dict[str, QuerySet]:
    return _querysets(_task_ids(contact, identifiers))


def erase(contact: Any, identifiers: list[str], actor: str) -> dict[str, int]:
    """Cancel the contact's unfinished tasks, then blank the payload, result, error and
    idempotency key of every task of the contact or mentioning them, and their events'
    details: the task rows stay, for the operational history, without personal data."""
    task_ids = _task_ids(contact, identifiers)
    q = _querysets(task_ids)
    counts = {"tasks_cancelled": 0}
    for task_id in q["tasks_cancelled"].values_list("id", flat=True):
        with contextlib.suppress(IllegalTransition):
            counts["tasks_cancelled"] += task_cancel(
                task_id=task_id, actor=actor, reason="contact erased"
            ).applied
    counts["tasks_scrubbed"] = q["tasks_scrubbed"].update(
        payload={"erased": True}, result={}, error_message="", contact=None, idempotency_key=None
    )
    counts["task_events_scrubbed"] = q["task_events_scrubbed"].update(details={})
    return counts


HOOK = purge.PurgeHook(app="orchestrator", expired=expired, mentioning=mentioning, erase=erase)
