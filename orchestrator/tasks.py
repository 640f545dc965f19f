"""Celery tasks of the orchestrator. They take ids and call services."""

from __future__ import annotations

import contextlib
import logging
import random

from celery import shared_task
from celery.exceptions import Retry
from django.conf import settings

from comms_platform import dbhealth, logs
from orchestrator import leases, registry, services
from orchestrator.errors import AgentError
from orchestrator.models import Task
from orchestrator.states import IllegalTransition

log = logging.getLogger(__name__)


# max_retries=None: Celery never gives up on its own; the attempt counter on the Task row decides.
@shared_task(
    bind=True, name="orchestrator.execute_task", acks_late=True, reject_on_worker_lost=True, max_retries=None
)
def execute_task(self, task_id: str) -> str:
    """Claim a task and run its agent's handler (looked up through the registry)."""
    delivery = self.request.delivery_info or {}
    worker = self.request.hostname or "eager"
    try:
        task = services.task_claim(task_id=task_id, worker=worker, redelivered=bool(delivery.get("redelivered")),
                                   early_by=services.RETRY_CLOCK_SLACK_SECONDS if self.request.retries else 0.0)  # fmt: skip
    except Exception as exc:
        if not dbhealth.is_database_error(exc):
            raise
        # The database is away, not the task at fault: nothing was written (the claim is one
        # transaction). Take a fresh connection and try this message again shortly.
        _database_lost(self, task_id, exc, settings.TASK_DATABASE_RETRY_SECONDS)
    if task is None:
        return "skipped"
    route = registry.get_route(task.type)
    logs.bind_task(task, agent=route.agent if route else task.agent or None)
    if self.request.is_eager:
        return _run(self, task_id, task)
    leases.keeper.hold(task.id, task.lease_expires_at)
    try:
        return _run(self, task_id, task)
    finally:
        leases.keeper.drop(task.id)


def _run(self, task_id: str, task: Task) -> str:
    route = registry.get_route(task.type)
    if route is None:
        services.task_fail(
            task_id=task_id, code="no_agent", message=f"no agent for {task.type}", actor="worker"
        )
        return "failed"
    try:
        registry.load_handler(route.handler)(task)
    except AgentError as exc:
        if exc.permanent or task.attempts >= settings.TASK_MAX_ATTEMPTS:
            _fail(task, exc.code, exc.message)
            return "failed"
        _retry(self, task, route.queue, exc.message, exc.retry_after)
    except Exception as exc:
        if dbhealth.is_database_error(exc):
            _retry_after_database_error(self, task, route.queue, exc)
        # A bug or an unexpected outage: retry like a transient error, and fail the task
        # with the reason once its attempts are used up rather than loop forever.
        log.exception("handler for task %s raised", task_id)
        if task.attempts >= settings.TASK_MAX_ATTEMPTS:
            _fail(task, "agent_error", f"{type(exc).__name__}: {exc}")
            return "failed"
        _retry(self, task, route.queue, f"{type(exc).__name__}: {exc}", None)
    return "done"


def _database_lost(celery_task, task_id: str, exc: Exception, countdown: float) -> None:
    dbhealth.replace_broken_connections()
    log.warning(
        "task %s: database unavailable (%s); tried again in %.0fs", task_id, type(exc).__name__, countdown
    )
    # Back to the queue it came from (the route is in the database, which is away).
    queue = (celery_task.request.delivery_info or {}).get("routing_key") or None
    raise celery_task.retry(countdown=countdown, exc=None, queue=queue)


def _retry_after_database_error(celery_task, task: Task, queue: str, exc: Exception) -> None:
    """The connection broke under the handler: release the task for a retry on a fresh
    connection; if the database is still away, its lease runs out and the retry (or the
    sweeper) takes it then. Never failed for it, and the send pipeline's attempt row keeps a
    retried send from going out twice."""
    dbhealth.replace_broken_connections()
    try:
        _retry(celery_task, task, queue, f"database unavailable: {type(exc).__name__}", None)
    except Retry:
        raise
    except Exception as again:
        if not dbhealth.is_database_error(again):
            raise
        _database_lost(celery_task, str(task.id), again, settings.TASK_LEASE_SECONDS)


def _fail(task: Task, code: str, message: str) -> None:
    with contextlib.suppress(IllegalTransition):  # a callback may have finished it already
        services.task_fail(task_id=task.id, code=code, message=message, actor=f"agent:{task.agent}")


def backoff_seconds(attempt: int) -> float:
    """Exponential backoff with full jitter (AWS architecture blog), capped."""
    ceiling = min(settings.TASK_RETRY_BACKOFF_MAX_SECONDS, settings.TASK_RETRY_BACKOFF_SECONDS * 2**attempt)
    return random.uniform(ceiling / 2, ceiling)


def _retry(celery_task, task: Task, queue: str, reason: str, retry_after: float | None) -> None:
    countdown = max(retry_after or 0.0, backoff_seconds(task.attempts))
    log.info("task %s retries in %.1fs: %s", task.id, countdown, reason)
    if settings.CELERY_TASK_ALWAYS_EAGER or celery_task.request.is_eager:
        countdown = 0  # in process: nothing to wait for but the clock
    services.task_release(task_id=task.id, reason=reason, retry_in=countdown)
    raise celery_task.retry(countdown=countdown, queue=queue, exc=None)


@shared_task(name="orchestrator.sweep_tasks", acks_late=True)
def sweep_tasks() -> dict[str, int]:
    report = services.sweep_tasks()
    return {"resent": report.resent, "expired": report.expired, "left_pending": report.left_pending,
            "status_checks": report.status_checks, "digests": report.digests}  # fmt: skip


@shared_task(name="orchestrator.check_status", acks_late=True)
def check_status(task_id: str) -> str:
    """Run the task type's status check (registry.status_check): a final callback never came."""
    task_type = Task.objects.values_list("type", flat=True).filter(id=task_id).first()
    path = registry.status_checks().get(task_type or "")
    if path is None:
        return "no_status_check"
    return registry.load_handler(path)(task_id)


@shared_task(name="orchestrator.child_finished", acks_late=True)
def child_finished(child_id: str) -> None:
    from orchestrator.routing import on_child_finished

    on_child_finished(child_id=child_id)


@shared_task(bind=True, name="orchestrator.flush_digest", acks_late=True)
def flush_digest(self, digest_id: int) -> str:
    """Flush a digest when its window ends (sent with an ETA at ``closes_at``). A message that
    arrives early (this worker's clock behind the one that opened the digest) goes back for the
    rest of the window; a lost one is made up for by the sweep."""
    outcome = services.digest_flush(digest_id=digest_id, by="eta")
    if outcome == "not_due" and not self.request.is_eager:
        from orchestrator.models import Digest

        closes_at = Digest.objects.values_list("closes_at", flat=True).get(id=digest_id)
        self.apply_async(args=[digest_id], eta=closes_at, queue="orchestrator")
    return outcome
