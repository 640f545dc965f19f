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

import contextlib
import functools
import hashlib
import json
import logging
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from agents.common import metrics
from agents.common.heartbeats import agent_healthy
from comms_platform.celery import app as celery_app
from comms_platform.db import insert_one
from orchestrator import registry
from orchestrator.live import publish_task_update
from orchestrator.models import Task, TaskEvent
from orchestrator.states import FINAL, IllegalTransition, Kind, TaskStatus, classify, forward_path

log = logging.getLogger(__name__)

S = TaskStatus
PRE_DISPATCH = (S.PENDING, S.ROUTED, S.QUEUED)
PUBLISH_BATCH = 500  # Redis commands buffered per pipeline flush


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
    # One INSERT: in autocommit it commits at once and on_commit runs right away; inside
    # a caller's transaction the message waits for that transaction to commit. A taken
    # idempotency key inserts nothing and breaks no transaction (``insert_one``).
    if insert_one(task):
        transaction.on_commit(lambda: request_dispatch(task))
    else:
        if not idempotency_key:
            raise IntegrityError(f"the task {task.id} could not be inserted")
        existing = _existing_for_key(source, idempotency_key, digest)
        if existing is None:  # pragma: no cover - the constraint fired, so the row exists
            raise IntegrityError(f"the task with idempotency key {idempotency_key!r} could not be inserted")
        return existing, False
    metrics.task_entered(task.type, task.channel, S.PENDING)
    return task, True


def _existing_for_key(source: str, key: str, digest: str) -> Task | None:
    existing = Task.objects.filter(source=source, idempotency_key=key).first()
    if existing is not None and existing.request_digest != digest:
        raise IdempotencyConflict(existing)
    return existing


# --- Dispatch ---------------------------------------------------------------------------


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


# --- Worker side ------------------------------------------------------------------------


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
        task = _locked(task_id)
        if task is None or task.status in FINAL:
            return None
        if task.expires_at is not None and task.expires_at <= now and task.status != S.IN_PROGRESS:
            _finish(task, S.EXPIRED, actor=f"worker:{worker}", code="expired",
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
        _insert_events(events)
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
    supersedes_failure: bool = False,
) -> TransitionResult:
    """Apply one transition. Raises IllegalTransition (nothing written) or Task.DoesNotExist.

    A stale transition (backwards, or a repeat) is recorded as an unapplied event and
    leaves the task as it was, so late or duplicated callbacks never regress a task.
    """
    change = Transition(task_id=task_id, to=to, actor=actor, details=details, provider_id=provider_id,
                        result=result, error_code=error_code, error_message=error_message,
                        supersedes_failure=supersedes_failure)  # fmt: skip
    with transaction.atomic():
        (outcome,) = task_transition_many([change])
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


@dataclass(frozen=True)
class Transition:
    """One transition to apply (``task_transition``'s arguments)."""

    task_id: Any
    to: str
    actor: str
    details: dict[str, Any] | None = None
    provider_id: str | None = None
    result: dict[str, Any] | None = None
    error_code: str | None = None
    error_message: str | None = None
    # The provider's later word on the same send: a task it failed (undelivered) may still
    # succeed when it reports the message delivered after all (FINAL_STATUS_RULE).
    supersedes_failure: bool = False


# One rule for conflicting final statuses, for the task and the dossier record alike: the
# provider's highest-ranked status wins (delivered/read over undelivered/failed). So a
# provider failure followed by a delivery ends succeeded, and a failure after a delivery is
# recorded but changes nothing. Our own decisions (cancelled, expired) are never superseded.
FINAL_STATUS_RULE = "the provider's highest-ranked final status wins"


def task_transition_many(changes: Sequence[Transition]) -> list[TransitionResult | Exception]:
    """``task_transition`` for many, in order, inside the caller's transaction: each task is
    locked once (all of them in id order, so two callers cannot deadlock on each other), the
    rows are written once per task and the events in one INSERT. Same rules and records as
    one ``task_transition`` after another; for each change its result, or the exception that
    call would have raised (IllegalTransition, Task.DoesNotExist), with nothing written."""
    ids = sorted({str(change.task_id) for change in changes})
    if len(ids) == 1:  # one task (task_transition, a send's accepted SID): the prepared locked read
        tasks = {str(task.id): task for task in [_locked(ids[0])] if task is not None}
    else:
        qs = Task.objects.filter(id__in=ids).order_by("id")
        if connection.features.has_select_for_update:
            qs = qs.select_for_update(of=("self",))
        tasks = {str(task.id): task for task in qs}
    results: list[TransitionResult | Exception] = []
    events: list[TaskEvent] = []
    changed: dict[str, set[str]] = defaultdict(set)
    for change in changes:
        task = tasks.get(str(change.task_id))
        if task is None:
            results.append(Task.DoesNotExist(change.task_id))
            continue
        try:
            event, fields = _transition_in_memory(task, change)
        except IllegalTransition as exc:
            results.append(exc)
            continue
        events.append(event)
        changed[str(task.id)].update(fields)
        results.append(TransitionResult(task, applied=bool(fields)))
    for task_id, fields in changed.items():
        if fields:
            tasks[task_id].save(update_fields=sorted(fields))
    _insert_events(events)
    for event in events:
        if event.applied:
            metrics.task_entered(tasks[str(event.task_id)].type, event.channel, event.to_status)
    return results


def _transition_in_memory(task: Task, change: Transition) -> tuple[TaskEvent, list[str]]:
    """Apply ``change`` to a locked ``task`` in memory: its (unsaved) event and the fields to
    save (none for a stale change). Raises IllegalTransition. Publishes the live update and
    tells a parent chain, both after commit."""
    to = change.to
    kind = classify(task.status, to)
    superseded = change.supersedes_failure and task.status == S.FAILED and to == S.SUCCEEDED
    if kind is Kind.ILLEGAL and not superseded:
        raise IllegalTransition(task.status, to)
    event = TaskEvent(task=task, from_status=task.status, to_status=to, actor=change.actor,
                      channel=task.channel, details=dict(change.details or {}))  # fmt: skip
    if kind is Kind.STALE and not superseded:
        event.applied = False
        # A late callback changes no state, but what it says (a message's "sent" after the
        # task moved on) is news to a page showing it.
        _publish(task, {"status": task.status, "from": task.status, "to": to, "applied": False}, change)
        return event, []
    fields = ["status", "updated_at"]
    if superseded:
        event.details.update(superseded=S.FAILED, rule=FINAL_STATUS_RULE)
    if to == S.SUCCEEDED and (task.error_code or task.error_message):
        # A success carries no error: a retry's reason or a superseded failure is in the events.
        task.error_code, task.error_message = "", ""
        fields += ["error_code", "error_message"]
    if change.provider_id is not None:
        task.provider_id = change.provider_id
        fields.append("provider_id")
    if change.result is not None:
        task.result = {**task.result, **change.result}
        fields.append("result")
    if change.error_code is not None:
        task.error_code = change.error_code
        fields.append("error_code")
    if change.error_message is not None:
        task.error_message = change.error_message
        fields.append("error_message")
    previous = task.status
    task.status = to
    if to in FINAL:
        task.finished_at = timezone.now()
        task.lease_expires_at = None
        fields += ["finished_at", "lease_expires_at"]
    _publish(task, {"status": to, "from": previous, "applied": True}, change)
    if to in FINAL and task.parent_id:
        _notify_parent_on_commit(task.id)
    return event, fields


def _publish(task: Task, data: dict[str, Any], change: Transition) -> None:
    data = {"id": str(task.id), **data, "actor": change.actor}
    status = (change.details or {}).get("message_status")
    if status:
        data["message_status"] = status
    publish_task_update(task.id, data, channel=task.channel)


def task_contact_link(*, task_id: Any, contact_id: Any) -> bool:
    """Attach a contact to a task that has none (an agent found or created it by the task's
    address), so the task shows in the contact's dossier. One conditional UPDATE."""
    return Task.objects.filter(id=task_id, contact__isnull=True).update(contact_id=contact_id) == 1


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
    task.save(update_fields=["status", "attempts", "error_code", "error_message", "finished_at",
                             "lease_expires_at", "updated_at"])  # fmt: skip
    _insert_events([TaskEvent(task=task, from_status=previous, to_status=to, actor=actor, channel=task.channel,
                              details={"error_code": code, "attempt": task.attempts})])  # fmt: skip
    metrics.task_entered(task.type, task.channel, to)
    publish_task_update(task.id, {"id": str(task.id), "status": to, "from": previous, "applied": True,
                                  "actor": actor}, channel=task.channel)  # fmt: skip
    if task.parent_id:
        _notify_parent_on_commit(task.id)


def _notify_parent_on_commit(child_id: Any) -> None:
    """A child of a fallback chain finished: let the orchestrator move the chain on."""
    from orchestrator.tasks import child_finished

    def send() -> None:
        try:
            child_finished.apply_async(args=[str(child_id)], queue="orchestrator")
        except Exception as exc:  # the sweeper's overdue check still moves the chain on
            log.warning("child %s: parent not notified (%s)", child_id, type(exc).__name__)

    transaction.on_commit(send)


def _locked(task_id: Any) -> Task | None:
    """The task row, locked: the claim's and every transition's first statement (three times
    per task). The one statement the orchestrator keeps as SQL text: the ORM compiles it once
    per database vendor from the model (``_locked_sql``), and ``raw`` maps the row back onto a
    Task as a queryset would. It runs through Django's cursor (``execute_wrapper`` sees it).
    Compiling the queryset on every call cost a worker more CPU than PostgreSQL spent on it."""
    pk = Task._meta.pk
    value = pk.get_db_prep_value(pk.to_python(task_id), connection)
    return next(iter(Task.objects.raw(_locked_sql(connection.vendor), [value])), None)


@functools.cache
def _locked_sql(vendor: str) -> str:
    """``Task.objects.select_for_update().filter(pk=…)[:1]`` as the ORM writes it, with a
    placeholder for the key (compiled inside the caller's transaction, as FOR UPDATE needs)."""
    sql, _ = Task.objects.select_for_update().filter(pk=_SAMPLE_PK).order_by()[:1].query.sql_with_params()
    return sql


_SAMPLE_PK = uuid.UUID(int=0)


def _insert_events(events: list[TaskEvent]) -> None:
    if events:
        TaskEvent.objects.bulk_create(events)  # one INSERT, one event or many


# --- Sweeper ----------------------------------------------------------------------------


@dataclass
class SweepReport:
    resent: int = 0
    expired: int = 0
    left_pending: int = 0
    status_checks: int = 0


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


RETRYABLE = (S.FAILED, S.EXPIRED, S.CANCELLED)


class NotRetryable(Exception):
    def __init__(self, task: Task) -> None:
        super().__init__(
            f"task {task.id} is {task.status}; only failed, expired or cancelled tasks are retried"
        )
        self.task = task


def task_retry(*, task_id: Any, actor: str) -> Task:
    """Re-dispatch a finished, unsuccessful task as a NEW task (``parent`` = the old one).

    A new row rather than re-queueing the old one: the old task keeps its final state, its
    events and its error, so the history stays true, and the state machine never runs backwards.
    The copy has no idempotency key (the original's key stays with the original).
    """
    old = Task.objects.get(id=task_id)
    if old.status not in RETRYABLE:
        raise NotRetryable(old)
    new, _ = task_create(
        type=old.type,
        payload=old.payload,
        contact_id=old.contact_id,
        correlation_id=old.correlation_id,
        priority=old.priority,
        source=old.source,
        parent_id=old.id,
    )
    log.info("task %s retried as %s by %s", old.id, new.id, actor)
    return new


# --- send pipeline (h14b) ---
# Conditional single-statement writes the agents' send pipelines need on a task they hold
# (the lead moves them into the split services package at merge).


def task_contact_set_if_unset(*, task_id: Any, contact_id: Any) -> None:
    """Attach the contact an agent found or created for the task's recipient, unless one is set."""
    Task.objects.filter(id=task_id, contact__isnull=True).update(contact_id=contact_id)


def task_attempt_give_back(*, task_id: Any) -> None:
    """An attempt that only waited (a rate limit) does not count towards dead-lettering."""
    from django.db.models import F  # here, not at the top: this section moves at merge

    Task.objects.filter(id=task_id, attempts__gt=0).update(attempts=F("attempts") - 1)


def task_provider_id_set_if_unset(*, task_id: Any, provider_id: str) -> None:
    """Keep the provider's id on a task a fast callback already finished."""
    Task.objects.filter(id=task_id, provider_id="").update(provider_id=provider_id)
