"""Dispatch happens after commit, the row is the outbox, and the sweeper re-sends."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from orchestrator import services
from orchestrator.models import Task
from orchestrator.states import TaskStatus
from orchestrator.tasks import execute_task
from tests.support.services import transactional_db

S = TaskStatus


@pytest.fixture
def sent(monkeypatch):
    """Record the Celery messages the orchestrator sends (queue and task id)."""
    calls = []
    monkeypatch.setattr(execute_task, "apply_async", lambda args, queue, **kw: calls.append((queue, args[0])))
    return calls


@transactional_db
def test_rolled_back_transaction_sends_no_message(sent):
    with pytest.raises(RuntimeError), transaction.atomic():
        services.task_create(type="diagnostic.echo")
        raise RuntimeError("the caller's transaction fails")
    assert sent == []
    assert not Task.objects.exists()


@transactional_db
def test_message_is_sent_only_after_commit(sent):
    with transaction.atomic():
        task, _ = services.task_create(type="diagnostic.echo")
        assert sent == []  # the row is not committed yet: no worker may see the message
    assert sent == [("orchestrator", str(task.id))]
    task.refresh_from_db()
    assert task.status == S.QUEUED
    assert list(task.events.values_list("to_status", flat=True)) == [S.ROUTED, S.QUEUED]


@transactional_db
def test_broker_down_leaves_task_pending_and_sweeper_resends(monkeypatch):
    """The outbox logic; tests/test_worker_integration.py does the same with a real Redis."""
    from kombu.exceptions import OperationalError

    def broker_down(*args, **kwargs):
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    with monkeypatch.context() as m:
        m.setattr(execute_task, "apply_async", broker_down)
        task, created = services.task_create(type="diagnostic.echo")
    assert created
    task.refresh_from_db()
    assert task.status == S.PENDING
    assert not task.events.exists()
    # Too young for the sweeper: it waits TASK_SWEEP_AGE_SECONDS before re-sending.
    assert services.sweep_tasks(older_than_seconds=60).resent == 0
    report = services.sweep_tasks(older_than_seconds=0)
    assert report.resent == 1
    task.refresh_from_db()
    assert task.status == S.SUCCEEDED


@pytest.mark.django_db
def test_sweeper_expires_tasks_past_their_deadline(sent):
    task = Task.objects.create(type="diagnostic.echo", channel="system", status=S.PENDING,
                               expires_at=timezone.now() - timedelta(seconds=1))  # fmt: skip
    report = services.sweep_tasks(older_than_seconds=0)
    task.refresh_from_db()
    assert (report.expired, task.status, task.error_code) == (1, S.EXPIRED, "expired")
    assert sent == []


@pytest.mark.django_db
def test_sweeper_leaves_future_tasks_alone(sent):
    Task.objects.create(
        type="diagnostic.echo", channel="system", scheduled_for=timezone.now() + timedelta(hours=1)
    )
    assert services.sweep_tasks(older_than_seconds=0).resent == 0
    assert sent == []


@pytest.mark.django_db
def test_sweeper_retakes_a_dispatched_task_whose_lease_ran_out(sent):
    task = Task.objects.create(type="diagnostic.echo", channel="system", status=S.DISPATCHED, attempts=1,
                               lease_expires_at=timezone.now() - timedelta(seconds=1))  # fmt: skip
    assert services.sweep_tasks(older_than_seconds=0).resent == 1
    assert sent == [("orchestrator", str(task.id))]


@pytest.mark.django_db
def test_claim_skips_a_task_a_live_worker_holds():
    task = Task.objects.create(type="diagnostic.echo", channel="system", status=S.QUEUED)
    assert services.task_claim(task_id=task.id, worker="w1") is not None
    assert services.task_claim(task_id=task.id, worker="w2") is None  # duplicate message
    again = services.task_claim(task_id=task.id, worker="w2", redelivered=True)  # w1 died
    assert again is not None and again.attempts == 2


@pytest.mark.django_db
def test_claim_dead_letters_after_max_attempts(settings):
    settings.TASK_MAX_ATTEMPTS = 2
    task = Task.objects.create(type="diagnostic.echo", channel="system", status=S.QUEUED)
    services.task_claim(task_id=task.id, worker="w", redelivered=True)
    services.task_claim(task_id=task.id, worker="w", redelivered=True)
    assert services.task_claim(task_id=task.id, worker="w", redelivered=True) is None
    task.refresh_from_db()
    assert (task.status, task.error_code, task.attempts) == (S.FAILED, "dead_letter", 3)


@pytest.mark.django_db
def test_handler_errors_retry_then_fail_with_the_reason(settings, django_capture_on_commit_callbacks):
    from agents.common.errors import TransientError
    from orchestrator import registry
    from orchestrator.models import AgentRegistration

    settings.TASK_MAX_ATTEMPTS = 6  # more than Celery's own default of 3 retries
    AgentRegistration.objects.create(task_type="test.flaky", agent="flaky", channel="system",
                                     queue="orchestrator", handler="tests.test_dispatch.always_busy")  # fmt: skip
    registry.invalidate()
    with django_capture_on_commit_callbacks(execute=True):
        task, _ = services.task_create(type="test.flaky")
    task.refresh_from_db()
    assert (task.status, task.attempts, task.error_code) == (S.FAILED, 6, "provider_busy")
    assert task.error_message == "the provider said 503"
    assert TransientError  # imported for the handler below


def always_busy(task):
    from agents.common.errors import TransientError

    raise TransientError("the provider said 503", code="provider_busy")
