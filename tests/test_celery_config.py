"""Celery is configured not to lose work (DESIGN.md, PROVIDERS.md "Celery and Redis")."""

from __future__ import annotations

import pytest
from django.conf import settings

from comms_platform.celery import app
from orchestrator.models import Task
from orchestrator.states import TaskStatus
from tests.support.services import transactional_db, unavailable


def test_no_work_is_lost_settings():
    app.finalize()
    conf = app.conf
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    visibility = conf.broker_transport_options["visibility_timeout"]
    assert conf.task_soft_time_limit < conf.task_time_limit < visibility
    # The lease is short and renewed while the task runs (orchestrator/leases.py).
    assert 0 < settings.TASK_LEASE_RENEW_SECONDS <= settings.TASK_LEASE_SECONDS / 2
    assert conf.task_publish_retry is False  # intake must not hang on a dead broker
    assert {q.name for q in conf.task_queues} == set(settings.AGENT_QUEUES)
    assert conf.get("CELERY_DB_REUSE_MAX") == settings.CELERY_DB_REUSE_MAX > 0


def test_execute_task_acknowledges_late():
    from orchestrator.tasks import execute_task

    assert execute_task.acks_late is True
    assert execute_task.reject_on_worker_lost is True


@transactional_db
@pytest.mark.services
def test_background_dispatcher_batches_and_records_queued(settings, monkeypatch):
    from django.db import connection

    if connection.vendor != "postgresql":
        unavailable("needs PostgreSQL: the dispatcher thread has its own connection")
    from orchestrator import services
    from orchestrator.dispatcher import dispatcher
    from orchestrator.tasks import execute_task

    sent = []
    monkeypatch.setattr(execute_task, "apply_async", lambda args, queue, **kw: sent.append(args[0]))
    settings.DISPATCH_IN_BACKGROUND = True
    ids = [services.task_create(type="diagnostic.echo")[0].id for _ in range(50)]
    assert dispatcher.flush(timeout=20)
    dispatcher.stop()  # closes the thread's connection, so the test database can be dropped
    assert sorted(sent) == sorted(str(i) for i in ids)
    statuses = set(Task.objects.filter(id__in=ids).values_list("status", flat=True))
    assert statuses == {TaskStatus.QUEUED}
    events = Task.objects.get(id=ids[0]).events.values_list("from_status", "to_status")
    assert list(events) == [(TaskStatus.PENDING, TaskStatus.ROUTED), (TaskStatus.ROUTED, TaskStatus.QUEUED)]
