"""Concurrent sends inside a batch and the back-off after a transient refusal, in process
(Celery eager) against the fake Twilio with the real SDK. The production path (a real worker,
Redis, cancel through the API, Retry-After) is in test_worker.py."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
from django.urls import reverse
from django.utils import timezone

from broadcasts.models import Broadcast, Recipient, RecipientStatus
from broadcasts.services import broadcast_create
from tests.fakes.sendgrid import Answer
from tests.fakes.twilio import Scripted

pytestmark = pytest.mark.django_db
R = RecipientStatus


def _people(n: int) -> list[dict]:
    return [{"to": f"+1415555{2000 + i:04d}", "variables": {"name": f"P{i}"}} for i in range(n)]


def _create(n: int, django_capture_on_commit_callbacks) -> Broadcast:
    # The chain starts on commit; these tests drive the batches themselves.
    with django_capture_on_commit_callbacks(execute=False):
        broadcast = broadcast_create(
            name="c", channel="sms", body="Hi {{ name }}", recipients=_people(n)
        ).broadcast
    Broadcast.objects.filter(id=broadcast.id).update(status="running")
    return broadcast


def _batch(broadcast: Broadcast) -> dict:
    """One batch, its successor not run (the eager chain would run it inline)."""
    from broadcasts import engine

    batch = engine.batch_claim(broadcast_id=broadcast.id)
    if batch.wait:
        return {"backing_off": 1}
    return engine.batch_send(batch)


def test_a_batch_sends_concurrently_once_per_recipient(
    fake_twilio, settings, django_capture_on_commit_callbacks
):
    settings.BROADCAST_BATCH_SIZE = 40
    settings.BROADCAST_SEND_CONCURRENCY = 8
    fake_twilio.latency = 0.3  # Twilio's ~0.3 s per Messages call
    broadcast = _create(40, django_capture_on_commit_callbacks)
    threads_before = {t.ident for t in threading.enumerate()}
    started = time.monotonic()
    counts = _batch(broadcast)
    elapsed = time.monotonic() - started
    # One by one: 40 x 0.3 s = 12 s. Eight at a time: 5 rounds of 0.3 s, plus the claim and write.
    assert elapsed < 5.0, f"{elapsed:.1f} s"
    assert counts == {"accepted": 40}
    assert fake_twilio.max_in_flight == 8  # the pool was used, and never more than its size
    sent_to = Counter(p.form["To"][0] for p in fake_twilio.posts())
    assert sent_to == Counter(r["to"] for r in _people(40))  # exactly one request per recipient
    rows = list(Recipient.objects.filter(broadcast=broadcast))
    assert {r.status for r in rows} == {R.SENT}
    sids = {m["to"]: m["sid"] for m in fake_twilio.messages}
    assert all(r.provider_id == sids[r.address] for r in rows)  # each outcome written to its own row
    # The pool's threads are gone with the batch (none left behind per batch).
    assert not [
        t
        for t in threading.enumerate()
        if t.ident not in threads_before and t.name.startswith("broadcast-send")
    ]


def test_a_transient_refusal_stops_the_batch_and_backs_off_exponentially(
    fake_twilio, settings, django_capture_on_commit_callbacks, admin_client
):
    """A 503 without Retry-After: in-flight calls finish, nothing more starts, the rest goes back
    to pending, and no batch is claimed before the back-off (the base 0.6 s, half of it random: 0.3 to 0.6 s) is over; the next clean batch ends it."""
    settings.BROADCAST_BATCH_SIZE = 20
    settings.BROADCAST_SEND_CONCURRENCY = 4
    settings.BROADCAST_BACKOFF_BASE_SECONDS = 0.6
    fake_twilio.latency = 0.1
    fake_twilio.script.append(Scripted(status=503, code=20500, message="Service unavailable"))
    broadcast = _create(20, django_capture_on_commit_callbacks)
    before = timezone.now()
    counts = _batch(broadcast)
    # The first four calls were under way together; the 503 stopped the rest.
    assert len(fake_twilio.posts()) == 4, len(fake_twilio.posts())
    assert counts == {"accepted": 3, "not_sent": 17, "backoff_opened": 1}
    broadcast.refresh_from_db()
    assert broadcast.backoff_step == 1
    wait = (broadcast.backoff_until - before).total_seconds()
    assert 0.3 <= wait <= 0.6 + 0.5, wait  # half of the base at least, the base at most (plus the batch)
    statuses = Counter(Recipient.objects.filter(broadcast=broadcast).values_list("status", flat=True))
    assert statuses == {R.SENT: 3, R.PENDING: 17}  # the refused one and the unsent ones went back
    # While backing off: nothing is claimed, nothing sent; the API's progress says until when.
    assert _batch(broadcast) == {"backing_off": 1}
    assert len(fake_twilio.posts()) == 4
    from broadcasts.selectors import broadcast_progress

    assert broadcast_progress(broadcast)["backoff_until"] == broadcast.backoff_until
    page = reverse("dashboard:broadcast", args=[broadcast.pk])
    assert 'id="cc-bc-backoff"' in admin_client.get(page).content.decode()  # the console says so
    time.sleep(max(0.0, (broadcast.backoff_until - timezone.now()).total_seconds()) + 0.05)
    assert _batch(broadcast) == {"accepted": 17}
    broadcast.refresh_from_db()
    assert (broadcast.backoff_step, broadcast.backoff_until) == (0, None)  # a clean batch ends it
    assert 'id="cc-bc-backoff"' not in admin_client.get(page).content.decode()
    sent_to = Counter(p.form["To"][0] for p in fake_twilio.posts() if p.status == 201)
    assert sent_to == Counter(r["to"] for r in _people(20))  # each recipient accepted once
    assert set(Recipient.objects.filter(broadcast=broadcast).values_list("status", flat=True)) == {R.SENT}


def test_backoff_grows_with_refused_batches_in_a_row_and_is_capped(settings):
    from broadcasts.engine import backoff_seconds

    settings.BROADCAST_BACKOFF_BASE_SECONDS, settings.BROADCAST_BACKOFF_MAX_SECONDS = 1.0, 60.0
    for step, (low, high) in enumerate([(0.5, 1), (1, 2), (2, 4), (4, 8)]):
        assert all(low <= backoff_seconds(retry_after=None, step=step) <= high for _ in range(50))
    assert all(30 <= backoff_seconds(retry_after=None, step=40) <= 60 for _ in range(50))
    assert backoff_seconds(retry_after=7.0, step=3) == 7.0  # the provider's Retry-After wins


def test_email_batch_goes_to_sendgrid_concurrently_and_backs_off_on_429(
    sendgrid, settings, django_capture_on_commit_callbacks
):
    """SendGrid through anymail, one HTTP session per sending thread: 16 emails of 0.3 s each
    take about two rounds, not 4.8 s; then a 429 with Retry-After stops the next batch and opens
    a back-off of that length."""
    settings.BROADCAST_BATCH_SIZE = 16
    settings.BROADCAST_SEND_CONCURRENCY = 8
    people = [{"to": f"p{i}@example.org", "variables": {"name": f"P{i}"}} for i in range(24)]
    with django_capture_on_commit_callbacks(execute=False):
        broadcast = broadcast_create(name="sg", channel="email", subject="Hi {{ name }}", body="Hello {{ name }}",
                                     recipients=people).broadcast  # fmt: skip
    Broadcast.objects.filter(id=broadcast.id).update(status="running")
    sendgrid.script(*[Answer(status=202, delay=0.3) for _ in range(16)])
    started = time.monotonic()
    assert _batch(broadcast) == {"accepted": 16}
    assert time.monotonic() - started < 2.5
    assert len(sendgrid.received) == 16 and len(set(sendgrid.message_ids)) == 16
    sendgrid.script(
        Answer(status=429, body={"errors": [{"message": "too many"}]}, headers={"Retry-After": "30"})
    )
    before = timezone.now()
    counts = _batch(broadcast)
    assert counts["not_sent"] >= 1 and counts.get("accepted", 0) < 8 and counts["backoff_opened"] == 1
    broadcast.refresh_from_db()
    assert 29 <= (broadcast.backoff_until - before).total_seconds() <= 31  # the Retry-After, not ours
    rows = Counter(Recipient.objects.filter(broadcast=broadcast).values_list("status", flat=True))
    assert rows[R.SENT] == 16 + counts.get("accepted", 0) and rows[R.PENDING] == counts["not_sent"]
    # Every email accepted once: what SendGrid accepted is what the recipients say was sent.
    sent_ids = set(
        Recipient.objects.filter(broadcast=broadcast, status=R.SENT).values_list("provider_id", flat=True)
    )
    assert sent_ids == set(sendgrid.message_ids)


def test_a_refused_batchs_redis_key_holds_the_other_batches_before_the_database_knows(
    fake_twilio, settings, django_capture_on_commit_callbacks
):
    """The moment a batch is refused it raises the back-off key in Redis: a batch in flight
    stops at its next call and a claim waits, before the refused batch's writer has recorded
    ``backoff_until``."""
    import os

    from broadcasts import stopflags

    settings.REDIS_URL = os.environ.get("REDIS_URL") or pytest.skip("needs Redis")
    settings.BROADCAST_BATCH_SIZE = 5
    broadcast = _create(5, django_capture_on_commit_callbacks)
    stopflags.hold(broadcast.id, 0.5)  # as a refused batch's sending thread does
    assert Broadcast.objects.get(id=broadcast.id).backoff_until is None
    assert _batch(broadcast) == {"backing_off": 1}
    assert stopflags.is_raised(broadcast.id)  # what a batch in flight reads before each call
    assert fake_twilio.posts() == []
    time.sleep(0.6)
    assert not stopflags.is_raised(broadcast.id)
    assert _batch(broadcast) == {"accepted": 5}


def test_the_sending_threads_log_with_the_callers_context():
    """A line logged in a sending thread (a provider error) carries the batch task's fields."""
    from structlog.contextvars import bind_contextvars, get_contextvars, reset_contextvars

    from agents.common.batchsend import send_concurrently

    tokens = bind_contextvars(task_id="t-1", channel="sms")
    try:
        results = send_concurrently(
            [{"key": i} for i in range(6)],
            send=lambda item: {"key": item["key"], "outcome": "sent", "seen": get_contextvars()},
            before_send=lambda item: True,
            concurrency=3,
        )
    finally:
        reset_contextvars(**tokens)
    assert [r["seen"] for r in results] == [{"task_id": "t-1", "channel": "sms"}] * 6
