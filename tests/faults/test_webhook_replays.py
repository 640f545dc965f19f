"""Duplicated, reordered, replayed and re-signed webhooks, for every provider.

Already proven elsewhere (referenced, not repeated): Twilio status callbacks in every order
with duplicates, bad tokens, other hosts and other query strings (tests/messaging/
test_status_webhook.py); a duplicate inbound message (tests/messaging/test_inbound.py);
SendGrid duplicate batches, events repeated across batches, late events, tampered bodies,
wrong keys and stale timestamps (tests/email/test_webhook.py). Added here: a request signed
for ONE of our endpoints replayed against the OTHER (Twilio signs the full URL, so it must
not verify), an inbound message replayed after the contact's later messages, a whole
callback history replayed in reverse after the task finished, and a SendGrid batch replayed
with a fresh timestamp but the old signature.
"""

from __future__ import annotations

import json
import time

import pytest
from twilio.request_validator import RequestValidator

from agents.common.models import WebhookEvent
from agents.email import event_keys
from dossiers.models import Message
from orchestrator.models import Task, TaskEvent
from orchestrator.states import TaskStatus
from tests.email.conftest import ada  # noqa: F401 (fixture)
from tests.email.test_webhook import URL as SENDGRID_URL
from tests.email.test_webhook import email, ev, key, post, state  # noqa: F401 (fixtures)
from tests.messaging.conftest import (
    INBOUND_URL,
    PUBLIC,
    STATUS_URL,
    TOKEN,
    messaging_settings,  # noqa: F401 (fixture)
    signed_post,
)
from tests.messaging.test_inbound import inbound
from tests.messaging.test_status_webhook import callback, in_flight, url_for

pytestmark = [pytest.mark.django_db, pytest.mark.faults, pytest.mark.usefixtures("messaging_settings")]
S = TaskStatus


def test_status_callback_signed_for_the_inbound_url_is_refused(client):
    task = in_flight()
    params = callback("delivered")
    signature = RequestValidator(TOKEN).compute_signature(INBOUND_URL, params)
    response = client.post(url_for(task).removeprefix(PUBLIC), params, HTTP_X_TWILIO_SIGNATURE=signature)
    assert response.status_code == 403
    task.refresh_from_db()
    assert task.status == S.IN_PROGRESS and not WebhookEvent.objects.exists()


def test_inbound_signed_for_the_status_url_is_refused(client):
    params = inbound("STOP")
    signature = RequestValidator(TOKEN).compute_signature(STATUS_URL, params)
    response = client.post(INBOUND_URL.removeprefix(PUBLIC), params, HTTP_X_TWILIO_SIGNATURE=signature)
    assert response.status_code == 403
    assert not Message.objects.exists() and not WebhookEvent.objects.exists()


def test_history_replayed_in_reverse_after_the_end_changes_nothing(client):
    task = in_flight()
    history = ["queued", "sent", "delivered"]
    for status in history:
        assert signed_post(client, url_for(task), callback(status)).status_code in (200, 204)
    task.refresh_from_db()
    assert task.status == S.SUCCEEDED
    stored = WebhookEvent.objects.count()
    for status in reversed(history):
        assert signed_post(client, url_for(task), callback(status)).status_code in (200, 204)
    task.refresh_from_db()
    assert task.status == S.SUCCEEDED
    assert WebhookEvent.objects.count() == stored  # every replay recognised as seen
    assert TaskEvent.objects.filter(task=task, to_status=S.SUCCEEDED).count() == 1


def test_inbound_replayed_later_is_not_a_new_message(client, django_capture_on_commit_callbacks):
    first = inbound("first")
    with django_capture_on_commit_callbacks(execute=True):
        signed_post(client, INBOUND_URL, first)
        signed_post(client, INBOUND_URL, inbound("second"))
        signed_post(client, INBOUND_URL, first)  # Twilio's retry, after a later message
    assert Message.objects.count() == 2
    assert Task.objects.filter(type="sms.inbound").count() == 2


def test_sendgrid_batch_replayed_with_a_fresh_timestamp_is_refused(client, key, email):  # noqa: F811
    batch = [ev(email, "delivered", "evt-replay-1")]
    raw = json.dumps(batch).encode()
    old = str(int(time.time()) - 30)
    signature = event_keys.sign(key, old, raw)
    assert post(client, key, batch, timestamp=int(old), signature=signature).status_code in (200, 204)
    before = state(email)
    fresh = str(int(time.time()))
    response = client.post(SENDGRID_URL, data=raw, content_type="application/json",
                           HTTP_X_TWILIO_EMAIL_EVENT_WEBHOOK_SIGNATURE=signature,
                           HTTP_X_TWILIO_EMAIL_EVENT_WEBHOOK_TIMESTAMP=fresh)  # fmt: skip
    assert response.status_code == 403
    assert state(email) == before


def test_a_lower_status_applied_from_a_stale_read_does_not_overwrite_a_higher_one():
    """Two callbacks applied at once: 'sent' read the row before 'delivered' was written."""
    from agents.messaging.statuses import RANK
    from dossiers.services import message_status_raise

    task = in_flight()
    stale = Message.objects.get(task=task)  # status "queued"
    message_status_raise(
        message=Message.objects.get(task=task), sid=stale.provider_sid, status="delivered", rank=RANK
    )
    message_status_raise(message=stale, sid=stale.provider_sid, status="sent", rank=RANK)
    assert Message.objects.get(task=task).status == "delivered"
