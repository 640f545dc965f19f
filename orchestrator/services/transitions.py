"""Transitions: ``task_transition`` applies one transition and writes its ``TaskEvent`` in
the same transaction; stale (backwards) transitions are recorded but change nothing.
``task_transition_many`` does the same for many tasks at once."""

from __future__ import annotations

import functools
import logging
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from comms_platform import events as platform_events
from orchestrator import metrics
from orchestrator.live import publish_task_update
from orchestrator.models import Task, TaskEvent
from orchestrator.states import FINAL, IllegalTransition, Kind, TaskStatus, classify

log = logging.getLogger(__name__)

S = TaskStatus


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
        tasks = {str(task.id): task for task in [locked(ids[0])] if task is not None}
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
    insert_events(events)
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
    platform_events.publish_task_finished(task)
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


def finish_locked(task: Task, to: str, *, actor: str, code: str, message: str) -> None:
    """Move an already locked task to a final state (inside the caller's transaction)."""
    previous = task.status
    task.status = to
    task.error_code = code
    task.error_message = message
    task.finished_at = timezone.now()
    task.lease_expires_at = None
    task.save(update_fields=["status", "attempts", "error_code", "error_message", "finished_at",
                             "lease_expires_at", "updated_at"])  # fmt: skip
    insert_events([TaskEvent(task=task, from_status=previous, to_status=to, actor=actor, channel=task.channel,
                             details={"error_code": code, "attempt": task.attempts})])  # fmt: skip
    metrics.task_entered(task.type, task.channel, to)
    platform_events.publish_task_finished(task)
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


def locked(task_id: Any) -> Task | None:
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


def insert_events(events: list[TaskEvent]) -> None:
    if events:
        TaskEvent.objects.bulk_create(events)  # one INSERT, one event or many


def task_attempt_give_back(*, task_id: Any) -> None:
    """An attempt that only waited (a rate limit) does not count towards dead-lettering."""
    Task.objects.filter(id=task_id, attempts__gt=0).update(attempts=F("attempts") - 1)


def task_provider_id_set_if_unset(*, task_id: Any, provider_id: str) -> None:
    """Keep the provider's id on a task a fast callback already finished."""
    Task.objects.filter(id=task_id, provider_id="").update(provider_id=provider_id)
