"""Intake: create a task (the row is the outbox) and ask for its dispatch after commit;
retry a finished, unsuccessful task as a new one."""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction

from comms_platform.db import insert_one
from orchestrator import metrics, registry
from orchestrator.models import Task
from orchestrator.services.dispatch import request_dispatch
from orchestrator.states import TaskStatus

log = logging.getLogger(__name__)

S = TaskStatus


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
    callback_url: str = "",
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
        callback_url=callback_url,
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
        callback_url=old.callback_url,
    )
    log.info("task %s retried as %s by %s", old.id, new.id, actor)
    return new
