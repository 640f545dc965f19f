"""The worker side: ``task_claim`` takes a task (→ dispatched) and counts the attempt,
dead-lettering a task that keeps coming back; ``task_release`` lets it be claimed again once
its retry is due."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from orchestrator import registry
from orchestrator.models import Task, TaskEvent
from orchestrator.services.transitions import finish_locked, insert_events, locked
from orchestrator.states import FINAL, PRE_DISPATCH, TaskStatus, forward_path

S = TaskStatus


def task_claim(*, task_id: Any, worker: str, redelivered: bool = False, early_by: float = 0.0) -> Task | None:
    """Take a task for execution (→ dispatched) and count the attempt.

    Returns None when there is nothing to do: the task is final, already taken by a live
    worker, or was just dead-lettered. A task already ``dispatched`` is taken again only
    when its lease ran out or the broker redelivered the message (its worker died); a retry
    message may take it ``early_by`` seconds before (see RETRY_CLOCK_SLACK_SECONDS). A task
    past its ``expires_at`` is expired instead of run: it is never sent after its deadline.
    """
    now = timezone.now()
    with transaction.atomic():
        task = locked(task_id)
        if task is None or task.status in FINAL:
            return None
        if task.expires_at is not None and task.expires_at <= now and task.status != S.IN_PROGRESS:
            finish_locked(task, S.EXPIRED, actor=f"worker:{worker}", code="expired",
                    message="expired before it could be delivered")  # fmt: skip
            return None
        if task.status == S.DISPATCHED:
            lease_over = task.lease_expires_at is None or task.lease_expires_at <= now + timedelta(
                seconds=early_by
            )
            if not (lease_over or redelivered):
                return None
            steps = [S.DISPATCHED]
        elif task.status in PRE_DISPATCH:
            steps = forward_path(task.status, S.DISPATCHED)
        else:
            return None  # in progress: the provider has it; callbacks move it on
        route = registry.get_route(task.type)
        task.attempts += 1
        if task.attempts > settings.TASK_MAX_ATTEMPTS:
            finish_locked(
                task,
                S.FAILED,
                actor=f"worker:{worker}",
                code="dead_letter",
                message=f"gave up after {settings.TASK_MAX_ATTEMPTS} attempts: the task kept failing "
                "or its worker kept dying",
            )
            return None
        previous = task.status
        task.status = S.DISPATCHED
        task.agent = route.agent if route else task.agent
        task.lease_expires_at = now + timedelta(seconds=settings.TASK_LEASE_SECONDS)
        task.save(update_fields=["status", "agent", "attempts", "lease_expires_at", "updated_at"])
        events = []
        for step in steps:
            details = {"attempt": task.attempts, "worker": worker}
            if step == S.DISPATCHED and previous == S.DISPATCHED:
                details["reclaimed"] = "redelivered" if redelivered else "lease expired"
            events.append(
                TaskEvent(task=task, from_status=previous, to_status=step, actor=f"worker:{worker}",
                          channel=task.channel, details=details)
            )  # fmt: skip
            previous = step
        insert_events(events)
    return task


# A retry message may arrive this much before its countdown ends (clocks of the worker
# that scheduled it and the one that runs it): it may still take the task.
RETRY_CLOCK_SLACK_SECONDS = 1.0


def task_release(*, task_id: Any, reason: str, retry_in: float = 0.0) -> None:
    """Let a dispatched task be claimed again once its retry is due.

    The lease runs until then, so neither the sweeper nor a stray message retakes the task
    during its backoff (a 429's Retry-After included); after it, either may, and the claim
    lets only one of them run it.
    """
    now = timezone.now()
    due = now + timedelta(seconds=max(0.0, retry_in))
    Task.objects.filter(id=task_id, status=S.DISPATCHED).update(
        lease_expires_at=due, error_message=reason[:2000], updated_at=now
    )
