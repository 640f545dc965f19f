"""Dispatch happens after commit, the row is the outbox, and the sweeper re-sends."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from orchestrator import services
from orchestrator.models import Task, TaskEvent
from orchestrator.services import dispatch, intake
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
    from orchestrator import registry
    from orchestrator.errors import TransientError
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
    from orchestrator.errors import TransientError

    raise TransientError("the provider said 503", code="provider_busy")


@transactional_db
def test_duplicate_key_in_autocommit_returns_the_first_task(monkeypatch, sent):
    """task_create outside any transaction (no savepoint): the raw INSERT's IntegrityError is
    caught the same way and the first task is returned; nothing is sent twice."""
    from django.db import connection

    assert not connection.in_atomic_block
    first, created = services.task_create(type="diagnostic.echo", source="key:1", idempotency_key="k-1")
    assert created and sent == [("orchestrator", str(first.id))]
    lookup, lookups = intake._existing_for_key, []

    def late_lookup(*args):
        lookups.append(args)
        return None if len(lookups) == 1 else lookup(*args)  # the first look misses the row

    monkeypatch.setattr(intake, "_existing_for_key", late_lookup)
    again, created = services.task_create(type="diagnostic.echo", source="key:1", idempotency_key="k-1")
    assert (again.id, created, len(lookups)) == (first.id, False, 2)
    assert Task.objects.count() == 1
    assert sent == [("orchestrator", str(first.id))]


# --- Publishing through a real Redis broker (one pipeline per batch) ---------------------


@pytest.fixture
def redis_broker(settings, monkeypatch):
    """Celery publishes to a private Redis (not in-process): yields (client, server process)."""
    import redis
    from kombu.transport import redis as kombu_redis

    from comms_platform.celery import app as celery_app
    from tests.support.services import redis_server

    with redis_server() as (url, _port, proc):
        previous = celery_app.conf.broker_url
        celery_app.conf.broker_url = url
        celery_app.conf.task_always_eager = False  # conftest puts it back after the test
        monkeypatch.setattr(celery_app, "_pool", None)  # pools for the private broker
        monkeypatch.setattr(celery_app.amqp, "_producer_pool", None)
        settings.REDIS_URL = url  # agent heartbeats too
        assert kombu_redis.Channel.supports_batch_publish  # what the pipeline needs (no retry policy)
        try:
            yield redis.Redis.from_url(url), proc
        finally:
            celery_app.conf.broker_url = previous
            celery_app._pool = None
            celery_app.amqp._producer_pool = None


def pending_tasks(n: int) -> list[Task]:
    return [Task.objects.create(type="diagnostic.echo", channel="system") for _ in range(n)]


def rows(tasks: list[Task]) -> list[tuple]:
    return [(t.id, S.PENDING, t.type) for t in tasks]


@pytest.fixture
def redis_writes(monkeypatch):
    """Each write of commands to Redis (a pipeline is one write), as the bytes sent."""
    from redis.connection import AbstractConnection

    writes: list[bytes] = []
    original = AbstractConnection.send_packed_command

    def send(self, command, check_health=True):
        writes.append(command if isinstance(command, bytes) else b"".join(command))
        return original(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", send)
    return writes


@pytest.mark.django_db
@pytest.mark.services
def test_a_batch_is_published_in_one_redis_pipeline_and_recorded_queued(redis_broker, redis_writes):
    client, _ = redis_broker
    warm = pending_tasks(1)  # connects, declares the queue
    assert services.send_tasks(rows(warm)) == 1
    tasks = pending_tasks(50)
    redis_writes.clear()
    assert services.send_tasks(rows(tasks)) == 50
    assert client.llen("orchestrator") == 51  # one message per task, on the agent's queue
    pushes = [w for w in redis_writes if b"LPUSH" in w]
    assert len(pushes) == 1, f"{len(pushes)} writes carried the 50 messages"
    assert pushes[0].count(b"LPUSH") == 50
    queued = {json.loads(m)["headers"]["argsrepr"] for m in client.lrange("orchestrator", 0, -1)}
    assert queued == {repr([str(t.id)]) for t in [*warm, *tasks]}
    statuses = set(Task.objects.filter(id__in=[t.id for t in tasks]).values_list("status", flat=True))
    assert statuses == {S.QUEUED}
    assert TaskEvent.objects.filter(task__in=tasks, to_status=S.QUEUED).count() == 50


def assert_left_pending(tasks) -> None:
    """Nothing recorded: every task still pending (the outbox), no event written."""
    statuses = set(Task.objects.filter(id__in=[t.id for t in tasks]).values_list("status", flat=True))
    assert statuses == {S.PENDING}
    assert not TaskEvent.objects.filter(task__in=tasks).exists()


@pytest.mark.django_db
@pytest.mark.services
def test_failed_pipeline_flush_records_nothing_queued(redis_broker):
    """Redis goes away after the batch was buffered: the flush fails, every task stays pending."""
    _, proc = redis_broker
    assert services.send_tasks(rows(pending_tasks(1))) == 1  # the connection is up and pooled
    proc.terminate()
    proc.wait()
    tasks = pending_tasks(50)
    assert services.send_tasks(rows(tasks)) == 0
    assert_left_pending(tasks)


@pytest.mark.django_db
@pytest.mark.services
def test_partly_flushed_batch_records_none_of_it(redis_broker, monkeypatch):
    """The pipeline flushes every PUBLISH_BATCH commands; Redis dies before the third flush.
    Twenty messages went out, but no task is recorded queued: all stay pending for the sweeper
    (a message sent twice is run once: the worker's claim is conditional)."""
    from kombu.transport.redis import PublishBatch

    client, proc = redis_broker
    assert services.send_tasks(rows(pending_tasks(1))) == 1
    client.delete("orchestrator")
    monkeypatch.setattr(dispatch, "PUBLISH_BATCH", 10)
    flushes: list[int] = []
    original = PublishBatch.flush

    def flush(self):
        if self._buffered and len(flushes) == 2:  # the outage, between two flushes
            flushes.append(client.llen("orchestrator"))
            proc.terminate()
            proc.wait()
        elif self._buffered:
            flushes.append(0)
        return original(self)

    monkeypatch.setattr(PublishBatch, "flush", flush)
    tasks = pending_tasks(50)
    assert services.send_tasks(rows(tasks)) == 0
    assert flushes == [0, 0, 20]  # two flushes of ten went out before the outage
    assert_left_pending(tasks)


@pytest.mark.django_db
@pytest.mark.services
def test_broker_down_from_the_start_leaves_tasks_pending(redis_broker):
    _, proc = redis_broker
    proc.terminate()
    proc.wait()
    tasks = pending_tasks(5)
    assert services.send_tasks(rows(tasks)) == 0
    assert_left_pending(tasks)
