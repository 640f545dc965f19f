"""Dispatch: send each due task's Celery message to its agent's queue, then record
pending → routed → queued. If the broker is down the task simply stays ``pending``; the
sweeper re-sends it."""

from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from comms_platform.celery import app as celery_app
from orchestrator import registry
from orchestrator.heartbeats import agent_healthy
from orchestrator.models import Task, TaskEvent
from orchestrator.states import FINAL, TaskStatus

log = logging.getLogger(__name__)

S = TaskStatus
PUBLISH_BATCH = 500  # Redis commands buffered per pipeline flush


def request_dispatch(task: Task) -> None:
    """Dispatch a task this process just committed: in this thread, or batched by the
    background dispatcher, which keeps the broker round trip and the queued bookkeeping off
    the request. If the process dies first, the task is still ``pending`` in the database
    and the sweeper sends it (the row is the outbox)."""
    if task.scheduled_for and task.scheduled_for > timezone.now():
        return  # the sweeper sends it when it is due
    if settings.DISPATCH_IN_BACKGROUND:
        from orchestrator.dispatcher import dispatcher

        dispatcher.submit((task.id, S.PENDING, task.type))
    else:
        send_tasks([(task.id, S.PENDING, task.type)])


def task_dispatch(*, task_id: Any, actor: str = "orchestrator") -> bool:
    """Hand one task to its agent's queue. Returns True when a message was sent."""
    return dispatch_tasks(task_ids=[task_id], actor=actor) == 1


def dispatch_tasks(*, task_ids: Sequence[Any], actor: str = "orchestrator") -> int:
    """Send a Celery message for each task that is due, then record pending → routed → queued.

    Returns how many messages were sent. Safe to call again for the same tasks (the sweeper
    does): the worker's claim is conditional, so a duplicate message finds the task taken
    and does nothing. When the broker is down the tasks keep their state (the row is the
    outbox) and the sweeper tries again later.
    """
    rows = (
        Task.objects.filter(id__in=list(task_ids))
        .exclude(status__in=FINAL)
        .values_list("id", "status", "type", "scheduled_for")
    )
    now = timezone.now()
    due = [
        (task_id, status, task_type) for task_id, status, task_type, when in rows if not when or when <= now
    ]
    return send_tasks(due, actor=actor)


def send_tasks(rows: Sequence[tuple[Any, str, str]], *, actor: str = "orchestrator") -> int:
    """Publish (task id, status, type) rows that are due, and record what was queued."""
    from orchestrator.tasks import execute_task

    newly_queued: dict[registry.Route, list[Any]] = defaultdict(list)
    resent: list[Any] = []
    try:
        eager = celery_app.conf.task_always_eager
        # One Redis pipeline for the whole batch (kombu's Producer.batch): one round trip
        # instead of one per message. An error discards what was not flushed; those rows are
        # still pending, and the sweeper sends them.
        with contextlib.ExitStack() as stack:
            producer = None
            if not eager:
                producer = stack.enter_context(celery_app.producer_or_acquire())
                stack.enter_context(producer.batch(max_size=PUBLISH_BATCH))
            for task_id, status, task_type in rows:
                route = registry.get_route(task_type)
                if route is None or not route.enabled:
                    log.warning("task %s waits: no enabled agent for type %s", task_id, task_type)
                    continue
                if not agent_healthy(agent=route.agent):  # no recent heartbeat: route it no new work
                    log.warning(
                        "task %s waits: agent %s is unhealthy (no recent heartbeat)", task_id, route.agent
                    )
                    continue
                execute_task.apply_async(args=[str(task_id)], queue=route.queue, producer=producer)
                (newly_queued[route] if status == S.PENDING else resent).append(task_id)
    except Exception as exc:  # kombu/redis raise several types; the rows stay the outbox
        # The pipeline may have flushed part of the batch: record none of it. Those tasks
        # stay pending and are sent again; a worker that gets two messages runs one (its
        # claim is conditional).
        newly_queued.clear()
        resent.clear()
        log.warning("broker unavailable (%s): unsent tasks stay as they are", type(exc).__name__)
    for route, ids in newly_queued.items():
        _record_queued(ids, route, actor)
    if resent:
        Task.objects.filter(id__in=resent).update(updated_at=timezone.now())
    return sum(len(ids) for ids in newly_queued.values()) + len(resent)


def _record_queued(task_ids: list[Any], route: registry.Route, actor: str) -> None:
    """pending → routed → queued for each task, unless a fast worker already moved it on.

    The tasks still pending are locked (in id order: two dispatchers never deadlock), so a
    worker's claim waits for this and never sees its task go back to ``queued``; then one
    UPDATE and one INSERT of both events of every task."""
    details = {"agent": route.agent, "queue": route.queue}
    now = timezone.now()
    with transaction.atomic():
        pending = Task.objects.select_for_update().filter(id__in=task_ids, status=S.PENDING).order_by("id")
        ids = list(pending.values_list("id", flat=True))
        if not ids:
            return
        Task.objects.filter(id__in=ids).update(status=S.QUEUED, agent=route.agent, updated_at=now)
        TaskEvent.objects.bulk_create(
            TaskEvent(task_id=task_id, from_status=frm, to_status=to, actor=actor, channel=route.channel,
                      details=details)
            for task_id in ids
            for frm, to in ((S.PENDING, S.ROUTED), (S.ROUTED, S.QUEUED))
        )  # fmt: skip
