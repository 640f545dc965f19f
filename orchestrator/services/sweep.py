"""The sweeper: re-send tasks stuck before a worker took them, retake abandoned ones,
expire those past their deadline, queue status checks for callbacks that never came, and
flush the digests whose window is over (their ETA message was lost or never sent)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from orchestrator import registry
from orchestrator.models import Task
from orchestrator.services.digests import digests_flush_due
from orchestrator.services.dispatch import task_dispatch
from orchestrator.services.transitions import task_transition
from orchestrator.states import PRE_DISPATCH, IllegalTransition, TaskStatus

log = logging.getLogger(__name__)

S = TaskStatus


@dataclass
class SweepReport:
    resent: int = 0
    expired: int = 0
    left_pending: int = 0
    status_checks: int = 0
    digests: int = 0


def sweep_tasks(*, older_than_seconds: int | None = None, batch: int = 500) -> SweepReport:
    """Re-send tasks stuck before a worker took them, and retake abandoned ones.

    Picks tasks ``pending`` or ``queued`` (and due) untouched for ``older_than_seconds``,
    and ``dispatched`` tasks whose lease ran out; expires those past ``expires_at``.
    Rows are claimed with ``select_for_update(skip_locked=True)`` and touched, so two
    sweepers running at once never send the same task twice in one round.
    """
    age = settings.TASK_SWEEP_AGE_SECONDS if older_than_seconds is None else older_than_seconds
    now = timezone.now()
    report = SweepReport()
    for task_id in _claim_expired(now, batch):
        try:
            task_transition(task_id=task_id, to=S.EXPIRED, actor="sweeper", error_code="expired",
                            error_message="expired before it could be delivered")  # fmt: skip
            report.expired += 1
        except IllegalTransition:
            pass
    from orchestrator.routing import expire_overdue_children

    report.expired += expire_overdue_children(now=now)
    for task_id in _claim_stale(now, age, batch):
        if task_dispatch(task_id=task_id, actor="sweeper"):
            report.resent += 1
        else:
            report.left_pending += 1
    report.status_checks = _queue_status_checks(now, batch)
    report.digests = digests_flush_due(now=now, batch=batch)
    return report


def _claim_overdue_in_progress(now: datetime, batch: int) -> list[tuple[Any, str]]:
    """In-progress tasks with a status check, untouched for their channel's age: (id, type)."""
    checks = registry.status_checks()
    ages = settings.STATUS_CHECK_AGE_SECONDS
    overdue = Q()
    for channel, seconds in ages.items():
        overdue |= Q(channel=channel, updated_at__lte=now - timedelta(seconds=seconds))
    if not checks or not ages:
        return []
    with transaction.atomic():
        qs = Task.objects.filter(overdue, status=S.IN_PROGRESS, type__in=list(checks)).order_by("updated_at")
        if connection.features.has_select_for_update_skip_locked:
            qs = qs.select_for_update(skip_locked=True)
        rows = list(qs.values_list("id", "type")[:batch])
        if rows:  # touched: checked again one age later if it is still open then
            Task.objects.filter(id__in=[task_id for task_id, _ in rows]).update(updated_at=now)
    return rows


def _queue_status_checks(now: datetime, batch: int) -> int:
    """Ask each overdue task's agent (on its own queue) to check with the provider."""
    from orchestrator.tasks import check_status

    queued = 0
    for task_id, task_type in _claim_overdue_in_progress(now, batch):
        route = registry.get_route(task_type)
        try:
            check_status.apply_async(args=[str(task_id)], queue=route.queue if route else "orchestrator")
            queued += 1
        except Exception as exc:  # the broker is down: the next sweep after one age asks again
            log.warning("status check of %s not queued (%s)", task_id, type(exc).__name__)
    return queued


def _claim_expired(now: datetime, batch: int) -> list[Any]:
    # Dispatched tasks whose lease ran out are not running (their worker died, or they wait
    # for a retry that is due): past their deadline they expire too.
    waiting = Q(status__in=PRE_DISPATCH) | Q(status=S.DISPATCHED, lease_expires_at__lte=now)
    qs = Task.objects.filter(waiting, expires_at__lte=now).values_list("id", flat=True)
    return list(qs[:batch])


def _claim_stale(now: datetime, age: int, batch: int) -> list[Any]:
    cutoff = now - timedelta(seconds=age)
    due = Q(scheduled_for__isnull=True) | Q(scheduled_for__lte=now)
    stale = (Q(status__in=PRE_DISPATCH, updated_at__lte=cutoff) & due) | Q(
        status=S.DISPATCHED, lease_expires_at__lte=now
    )
    with transaction.atomic():
        qs = Task.objects.filter(stale).order_by("updated_at")
        if connection.features.has_select_for_update_skip_locked:
            qs = qs.select_for_update(skip_locked=True)
        ids = list(qs.values_list("id", flat=True)[:batch])
        if ids:
            Task.objects.filter(id__in=ids).update(updated_at=now)
    return ids
