"""The Redis stream in front of the status callbacks (agents/common/webhook_buffer.py): a
callback acknowledged with 204 is never lost — not when the worker that read it dies before or
after its commit, not when Redis is away — and is stored and applied once."""

from __future__ import annotations

import pytest
from django.db import transaction

from agents.common import webhook_buffer
from agents.common.models import WebhookEvent
from agents.messaging import callbacks
from orchestrator.models import Task, TaskEvent
from orchestrator.states import TaskStatus
from tests.messaging.conftest import STATUS_URL, signed_post
from tests.messaging.test_status_webhook import callback, in_flight
from tests.support.services import unavailable

pytestmark = pytest.mark.django_db
KIND = callbacks.STATUS_KIND


def post_delivered(client, task: Task):
    # The drain is asked for after the 204; these tests run it themselves.
    callbacks._flag_seen_at = 1e18
    return signed_post(client, f"{STATUS_URL}?task={task.id}", callback("delivered"))


def test_a_worker_that_dies_before_its_commit_leaves_the_callback_for_the_next_one(
    client, buffered, monkeypatch
):
    task = in_flight()
    assert post_delivered(client, task).status_code == 204
    assert webhook_buffer.pending("twilio", KIND) == 1
    # A drain reads the entry and dies before its commit: nothing stored, nothing acknowledged.
    assert len(webhook_buffer.take(provider="twilio", kind=KIND, count=10).rows) == 1
    assert WebhookEvent.objects.count() == 0
    # While its lock lives, no other drain reads the stream.
    assert len(webhook_buffer.take(provider="twilio", kind=KIND, count=10)) == 0
    buffered.delete(webhook_buffer._lock("twilio", KIND))  # …then it runs out
    # Read by the dead worker, the entry is not handed out again as new…
    assert len(webhook_buffer.take(provider="twilio", kind=KIND, count=10)) == 0
    buffered.delete(webhook_buffer._lock("twilio", KIND))
    # …until it has been idle RECLAIM_IDLE_MS: then the next drain claims, stores and applies it.
    monkeypatch.setattr(webhook_buffer, "RECLAIM_IDLE_MS", 0)
    assert callbacks.status_events_drain() == 1
    assert Task.objects.get(id=task.id).status == TaskStatus.SUCCEEDED
    assert list(WebhookEvent.objects.values_list("outcome", flat=True)) == ["delivered"]
    assert webhook_buffer.pending("twilio", KIND) == 0


def test_a_worker_that_dies_after_its_commit_does_not_apply_the_callback_twice(client, buffered, monkeypatch):
    task = in_flight()
    assert post_delivered(client, task).status_code == 204
    taken = webhook_buffer.take(provider="twilio", kind=KIND, count=10)
    with transaction.atomic():  # applied and stored, then the worker dies before its XACK
        taken.store(callbacks._apply_batch([row.payload for row in taken.rows]))
    buffered.delete(webhook_buffer._lock("twilio", KIND))  # its lock runs out
    assert Task.objects.get(id=task.id).status == TaskStatus.SUCCEEDED
    monkeypatch.setattr(webhook_buffer, "RECLAIM_IDLE_MS", 0)
    assert callbacks.status_events_drain() == 0  # claimed again, its key found stored: left out
    assert WebhookEvent.objects.count() == 1
    assert TaskEvent.objects.filter(task=task, to_status=TaskStatus.SUCCEEDED).count() == 1
    assert webhook_buffer.pending("twilio", KIND) == 0


def test_a_callback_buffered_twice_is_applied_and_stored_once(client, buffered):
    task = in_flight()
    post_delivered(client, task)
    post_delivered(client, task)  # Twilio sent it again
    assert webhook_buffer.pending("twilio", KIND) == 2
    assert callbacks.status_events_drain() == 1
    assert WebhookEvent.objects.count() == 1
    assert TaskEvent.objects.filter(task=task, to_status=TaskStatus.SUCCEEDED).count() == 1


def test_with_redis_away_the_callback_is_stored_in_the_table(client, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    task = in_flight()
    assert signed_post(client, f"{STATUS_URL}?task={task.id}", callback("delivered")).status_code == 204
    stored = WebhookEvent.objects.get()
    assert stored.kind == KIND and stored.processed_at is None  # beat's periodic drain applies it
    settings.REDIS_URL = ""
    assert callbacks.status_events_drain() == 1
    assert Task.objects.get(id=task.id).status == TaskStatus.SUCCEEDED


def test_a_row_the_database_refuses_does_not_sink_the_batch(buffered, caplog):
    """One event of a batch the database refuses (a key longer than its column): logged, the
    others of the batch applied and stored."""
    task = in_flight()
    webhook_buffer.push(provider="twilio", kind=KIND, dedupe_key="k" * 300, payload=callback("sent"))
    webhook_buffer.push(provider="twilio", kind=KIND, dedupe_key="good",
                        payload={**callback("delivered"), callbacks.TASK_KEY: str(task.id)})  # fmt: skip
    assert callbacks.status_events_drain() == 2
    assert WebhookEvent.objects.get().outcome == "delivered"
    assert Task.objects.get(id=task.id).status == TaskStatus.SUCCEEDED
    assert "could not be stored at all" in caplog.text
    assert webhook_buffer.pending("twilio", KIND) == 0


def test_a_drain_that_cannot_reach_the_database_lets_go_of_the_stream(buffered, monkeypatch):
    """The keys-already-stored query fails (PostgreSQL away): the stream's lock is released at
    once, so the next drain need not wait for it to run out."""
    from django.db import OperationalError

    webhook_buffer.push(provider="twilio", kind=KIND, dedupe_key="k1", payload=callback("sent"))

    def away(*args, **kwargs):
        raise OperationalError("the database is away")

    monkeypatch.setattr(WebhookEvent.objects, "filter", away)
    with pytest.raises(OperationalError):
        webhook_buffer.take(provider="twilio", kind=KIND, count=10)
    assert not buffered.exists(webhook_buffer._lock("twilio", KIND))


def test_a_drain_on_a_table_of_millions_reads_its_batch_not_the_table(buffered):
    """The two queries of a drain — which of these keys are stored, which stored callbacks are
    not applied yet — go through their indexes: neither reads every stored callback (on a year
    of callbacks, each drain would)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    if connection.vendor != "postgresql":
        unavailable("needs PostgreSQL (query plans)")
    now = timezone.now()
    WebhookEvent.objects.bulk_create(
        [WebhookEvent(provider="twilio", kind=KIND, dedupe_key=f"status:SM{i:032x}:delivered", payload={},
                      processed_at=now, outcome="delivered") for i in range(100_000)],
        batch_size=10_000,
    )  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE agents_common_webhookevent")
    for i in range(200):
        webhook_buffer.push(provider="twilio", kind=KIND, dedupe_key=f"status:SMnew{i}:sent", payload={})
    with CaptureQueriesContext(connection) as queries, transaction.atomic():
        taken = webhook_buffer.take(provider="twilio", kind=KIND, count=200)
        callbacks._drain_table(200)
    taken.release()
    assert len(taken.rows) == 200
    [keys_query] = [q["sql"] for q in queries if "dedupe_key" in q["sql"] and "IN (" in q["sql"]]
    [unapplied_query] = [q["sql"] for q in queries if 'processed_at" IS NULL' in q["sql"]]
    with connection.cursor() as cursor:
        for sql, index in ((keys_query, "webhookevent_key"), (unapplied_query, "webhookevent_unprocessed")):
            cursor.execute("EXPLAIN " + sql)
            plan = "\n".join(row[0] for row in cursor.fetchall())
            assert index in plan and "Seq Scan" not in plan, plan
