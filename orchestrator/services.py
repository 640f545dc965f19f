"""Task services: every write to a task goes through here.

- ``task_create`` writes the row (the outbox) and asks for dispatch on commit.
- ``task_dispatch`` sends the Celery message, then records pending → routed → queued.
  If the broker is down the task simply stays ``pending``; ``sweep_tasks`` re-sends it.
- ``task_claim`` is the worker's first step: it takes the task (→ dispatched) and counts
  the attempt, dead-lettering a task that keeps coming back.
- ``task_transition`` applies one transition and writes its ``TaskEvent`` in the same
  transaction; stale (backwards) transitions are recorded but change nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from agents.common.heartbeats import agent_healthy
from orchestrator import registry
from orchestrator.live import publish_task_update
from orchestrator.models import Task, TaskEvent
from orchestrator.states import FINAL, IllegalTransition, Kind, TaskStatus, classify, forward_path

log = logging.getLogger(__name__)

S = TaskStatus
PRE_DISPATCH = (S.PENDING, S.ROUTED, S.QUEUED)


class UnknownTaskType(Exception):
    def __init__(self, task_type: str) -> None:
        self.task_type = task_type
        self.known = registry.known_task_types()
        super().__init__(f"unknown task type {task_type!r}")


class IdempotencyConflict(Exception):
    def __init__(self, task: Task) -> None:
        self.task = task
        super().__init__("this Idempotency-Key was used with a different request body")


def request_digest(data: Any) -> str:
    """A stable digest of a request body, to tell a retry from a different request."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


# --- Intake ---------------------------------------------------------------------------


def task_create(
    *,
    type: str,
    payload: dict[str, Any] | None = None,
    contact_id: Any = None,
    correlation_id: str = "",
    priority: int = 5,
    scheduled_for: datetime | None = None,
    expires_at: datetime | None = None,
    source: str = "",
    idempotency_key: str | None = None,
    digest: str = "",
    parent_id: Any = None,
) -> tuple[Task, bool]:
    """Create a task and dispatch it after commit. Returns (task, created).

    With an idempotency key, a second call with the same key and digest returns the
    first task (created=False); the same key with another digest raises
    IdempotencyConflict. Concurrent calls with one key create exactly one task: the
    unique constraint decides, the losers read the winner's row.
    """
    route = registry.get_route(type)
    if route is None or not route.enabled:
        raise UnknownTaskType(type)
    if idempotency_key:
        existing = _existing_for_key(source, idempotency_key, digest)
        if existing is not None:
            return existing, False
    task = Task(
        type=type,
        channel=route.channel,
        payload=payload or {},
        contact_id=contact_id,
        correlation_id=correlation_id,
        priority=priority,
        scheduled_for=scheduled_for,
        expires_at=expires_at,
        source=source,
        idempotency_key=idempotency_key or None,
        request_digest=digest,
        parent_id=parent_id,
    )
    try:
        with transaction.atomic():
            task.save(force_insert=True)
            transaction.on_commit(lambda: task_dispatch(task_id=task.id))
    except IntegrityError:
        if not idempotency_key:
            raise
        existing = _existing_for_key(source, idempotency_key, digest)
        if existing is None:  # pragma: no cover - the constraint fired, so the row exists
            raise
        return existing, False
    return task, True


def _existing_for_key(source: str, key: str, digest: str) -> Task | None:
    existing = Task.objects.filter(source=source, idempotency_key=key).first()
    if existing is not None and existing.request_digest != digest:
        raise IdempotencyConflict(existing)
    return existing


# --- Dispatch ---------------------------------------------------------------------------


def task_dispatch(*, task_id: Any, actor: str = "orchestrator") -> bool:
    """Hand a task to its agent's queue. Returns True when a message was sent.

    Safe to call again for the same task (the sweeper does): the worker's claim is
    conditional, so a duplicate message finds the task taken and does nothing.
    """
    from orchestrator.tasks import execute_task

    row = Task.objects.filter(id=task_id).values("status", "type", "scheduled_for").first()
    if row is None or row["status"] in FINAL:
        return False
    if row["scheduled_for"] and row["scheduled_for"] > timezone.now():
        return False  # not due yet: the sweeper sends it when it is
    route = registry.get_route(row["type"])
    if route is None or not route.enabled:
        log.warning("task %s waits: no enabled agent for type %s", task_id, row["type"])
        return False
    if not agent_healthy(agent=route.agent):  # no recent heartbeat: route it no new work
        log.warning("task %s waits: agent %s is unhealthy (no recent heartbeat)", task_id, route.agent)
        return False
    try:
        execute_task.apply_async(args=[str(task_id)], queue=route.queue)
    except Exception as exc:  # kombu/redis raise several types; the row stays the outbox
        log.warning("task %s stays %s: broker unavailable (%s)", task_id, row["status"], type(exc).__name__)
        return False
    if row["status"] == S.PENDING:
        _record_queued(task_id, route, actor)
    else:
        Task.objects.filter(id=task_id).update(updated_at=timezone.now())
    return True


def _record_queued(task_id: Any, route: registry.Route, actor: str) -> None:
    """pending → routed → queued, unless a fast worker already moved the task on."""
    with transaction.atomic():
        moved = Task.objects.filter(id=task_id, status=S.PENDING).update(
            status=S.QUEUED, agent=route.agent, updated_at=timezone.now()
        )
        if moved:
            details = {"agent": route.agent, "queue": route.queue}
            TaskEvent.objects.bulk_create(
                [
                    TaskEvent(task_id=task_id, from_status=S.PENDING, to_status=S.ROUTED, actor=actor,
                              channel=route.channel, details=details),
                    TaskEvent(task_id=task_id, from_status=S.ROUTED, to_status=S.QUEUED, actor=actor,
                              channel=route.channel, details=details),
                ]
            )  # fmt: skip


# --- Worker side ------------------------------------------------------------------------


def task_claim(*, task_id: Any, worker: str, redelivered: bool = False) -> Task | None:
    """Take a task for execution (→ dispatched) and count the attempt.

    Returns None when there is nothing to do: the task is final, already taken by a live
    worker, or was just dead-lettered. A task already ``dispatched`` is taken again only
    when its lease ran out or the broker redelivered the message (its worker died).
    """
    now = timezone.now()
    with transaction.atomic():
        task = _locked(task_id)
        if task is None or task.status in FINAL:
            return None
        if task.status == S.DISPATCHED:
            lease_over = task.lease_expires_at is None or task.lease_expires_at <= now
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
            _finish(
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
        TaskEvent.objects.bulk_create(events)
    return task


def task_release(*, task_id: Any, reason: str) -> None:
    """Let a dispatched task be claimed again at once (before a retry is scheduled)."""
    Task.objects.filter(id=task_id, status=S.DISPATCHED).update(
        lease_expires_at=timezone.now(), error_message=reason[:2000], updated_at=timezone.now()
    )


# --- Transitions ------------------------------------------------------------------------


@dataclass(frozen=True)
class TransitionResult:
    task: Task
    applied: bool


def task_transition(
    *,
    task_id: Any,
    to: str,
    actor: str,
    details: dict[str, Any] | None = None,
    provider_id: str | None = None,
    result: dict[str, Any] | None = None,
    error_code: str | None = None,
    error_message: str | None = None,
) -> TransitionResult:
    """Apply one transition. Raises IllegalTransition (nothing written) or Task.DoesNotExist.

    A stale transition (backwards, or a repeat) is recorded as an unapplied event and
    leaves the task as it was, so late or duplicated callbacks never regress a task.
    """
    with transaction.atomic():
        task = _locked(task_id)
        if task is None:
            raise Task.DoesNotExist(task_id)
        kind = classify(task.status, to)
        if kind is Kind.ILLEGAL:
            raise IllegalTransition(task.status, to)
        event_details = dict(details or {})
        if kind is Kind.STALE:
            TaskEvent.objects.create(
                task=task, from_status=task.status, to_status=to, applied=False, actor=actor,
                channel=task.channel, details=event_details,
            )  # fmt: skip
            return TransitionResult(task, applied=False)
        fields = ["status", "updated_at"]
        if provider_id is not None:
            task.provider_id = provider_id
            fields.append("provider_id")
        if result is not None:
            task.result = {**task.result, **result}
            fields.append("result")
        if error_code is not None:
            task.error_code = error_code
            fields.append("error_code")
        if error_message is not None:
            task.error_message = error_message
            fields.append("error_message")
        previous = task.status
        task.status = to
        if to in FINAL:
            task.finished_at = timezone.now()
            task.lease_expires_at = None
            fields += ["finished_at", "lease_expires_at"]
        task.save(update_fields=fields)
        TaskEvent.objects.create(
            task=task, from_status=previous, to_status=to, actor=actor, channel=task.channel,
            details=event_details,
        )  # fmt: skip
        publish_task_update(task.id, {"id": str(task.id), "status": to, "from": previous, "actor": actor})
    return TransitionResult(task, applied=True)


def task_fail(*, task_id: Any, code: str, message: str, actor: str) -> TransitionResult:
    return task_transition(
        task_id=task_id, to=S.FAILED, actor=actor, error_code=code, error_message=message[:2000]
    )


def task_cancel(*, task_id: Any, actor: str, reason: str = "") -> TransitionResult:
    return task_transition(
        task_id=task_id,
        to=S.CANCELLED,
        actor=actor,
        details={"reason": reason} if reason else None,
        error_code="cancelled",
        error_message=reason or "cancelled",
    )


def _finish(task: Task, to: str, *, actor: str, code: str, message: str) -> None:
    """Move an already locked task to a final state (inside the caller's transaction)."""
    previous = task.status
    task.status = to
    task.error_code = code
    task.error_message = message
    task.finished_at = timezone.now()
    task.lease_expires_at = None
    task.save(
        update_fields=["status", "attempts", "error_code", "error_message", "finished_at",
                       "lease_expires_at", "updated_at"]
    )  # fmt: skip
    TaskEvent.objects.create(
        task=task, from_status=previous, to_status=to, actor=actor, channel=task.channel,
        details={"error_code": code, "attempt": task.attempts},
    )  # fmt: skip


def _locked(task_id: Any) -> Task | None:
    qs = Task.objects.filter(id=task_id)
    if connection.features.has_select_for_update:
        qs = qs.select_for_update(of=("self",))
    return qs.first()


# --- Sweeper ----------------------------------------------------------------------------


@dataclass
class SweepReport:
    resent: int = 0
    expired: int = 0
    left_pending: int = 0


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
    for task_id in _claim_stale(now, age, batch):
        if task_dispatch(task_id=task_id, actor="sweeper"):
            report.resent += 1
        else:
            report.left_pending += 1
    return report


def _claim_expired(now: datetime, batch: int) -> list[Any]:
    qs = Task.objects.filter(status__in=PRE_DISPATCH, expires_at__lte=now).values_list("id", flat=True)
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
