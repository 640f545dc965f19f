"""Statements per digest item and per flush (in a test's transaction, eager Celery): an item costs
a fixed handful whatever the digest's size; a flush grows by one UPDATE per item (the items'
transitions), its events are one INSERT."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from orchestrator import services
from orchestrator.models import Digest, Task
from orchestrator.tasks import execute_task
from tests.digests.conftest import item

JOIN_STATEMENTS = 14  # the claim, then the join: locked read, item INSERT, count UPDATE, transition


def queued_items(who, n: int, monkeypatch) -> list[Task]:
    from orchestrator.services import intake

    dispatch = intake.request_dispatch
    monkeypatch.setattr(intake, "request_dispatch", lambda task: None)
    tasks = [item(who, f"item {k}") for k in range(n)]
    monkeypatch.setattr(intake, "request_dispatch", dispatch)
    return tasks


def join_statements(task: Task) -> int:
    with CaptureQueriesContext(connection) as ctx:
        assert execute_task.apply(args=[str(task.id)]).result == "done"
    return len(ctx.captured_queries)


def flush_statements(digest_id: int, monkeypatch) -> int:
    from orchestrator.services import intake

    monkeypatch.setattr(intake, "request_dispatch", lambda task: None)  # count the flush, not the send
    with CaptureQueriesContext(connection) as ctx:
        assert services.digest_flush(digest_id=digest_id, force=True) == "sent"
    return len(ctx.captured_queries)


@pytest.mark.django_db(transaction=False)
def test_an_item_costs_the_same_statements_whatever_the_digest_size(clock, sms_route, ada, monkeypatch):
    tasks = queued_items(ada, 12, monkeypatch)
    counts = [join_statements(t) for t in tasks]
    assert len(set(counts[1:])) == 1 and counts[0] >= counts[1], counts  # whatever the size
    if connection.vendor == "postgresql":  # the ceiling, measured there (SQLite takes a few more)
        assert counts[0] <= JOIN_STATEMENTS + 1  # the first opens the digest (one more INSERT)
        assert counts[1] <= JOIN_STATEMENTS, counts
    assert Digest.objects.get().item_count == 12


@pytest.mark.django_db(transaction=False)
def test_a_flush_adds_one_statement_per_item(clock, sms_route, ada, monkeypatch):
    small = queued_items(ada, 2, monkeypatch)
    for t in small:
        join_statements(t)
    big = queued_items(ada, 22, monkeypatch)
    monkeypatch.setattr(services.digests, "schedule_flush", lambda **kw: False)
    Digest.objects.update(key="small")
    for t in big:
        join_statements(t)
    few = flush_statements(Digest.objects.get(key="small").id, monkeypatch)
    many = flush_statements(Digest.objects.get(key="order-updates").id, monkeypatch)
    assert many - few == 20, (few, many)  # one UPDATE per item; one INSERT of all their events
    assert few <= 14, few
