"""The engine in process (Celery eager) against the fake Twilio: batches, consent, quiet
hours, the WhatsApp window, signed status callbacks, progress and the CSV."""

from __future__ import annotations

import csv
import io
from datetime import time, timedelta

import pytest
from django.utils import timezone

from broadcasts import tasks
from broadcasts.models import Broadcast, Recipient, RecipientStatus
from broadcasts.selectors import broadcast_progress, recipients_csv_rows
from broadcasts.services import broadcast_create
from broadcasts.signals import progress_changed
from dossiers.models import Consent, ConsentStatus, Contact, Message
from tests.broadcasts.conftest import status_callback

pytestmark = pytest.mark.django_db
R = RecipientStatus


def _people(n: int, start: int = 100) -> list[dict]:
    return [{"to": f"+1415555{start + i:04d}", "variables": {"name": f"P{i}"}} for i in range(n)]


def _run(broadcast: Broadcast) -> None:
    tasks.send_batch.apply(args=[str(broadcast.id)])  # eager: each batch chains the next


def _sent_to(fake) -> list[str]:
    return [p.form["To"][0] for p in fake.posts()]


def test_a_broadcast_is_sent_in_batches_once_per_recipient(fake_twilio, django_capture_on_commit_callbacks):
    heard = []
    progress_changed.connect(lambda **kw: heard.append(kw["broadcast_id"]), weak=False, dispatch_uid="t1")
    with django_capture_on_commit_callbacks(execute=True):
        result = broadcast_create(name="b", channel="sms", body="Hi {{ name }}", recipients=_people(7))
    broadcast = result.broadcast
    progress_changed.disconnect(dispatch_uid="t1")
    assert sorted(_sent_to(fake_twilio)) == [f"+1415555{100 + i:04d}" for i in range(7)]
    # Eager Celery runs the next batch (queued before the sends) first: compare as sets.
    assert sorted(p.form["Body"][0] for p in fake_twilio.posts()) == [f"Hi P{i}" for i in range(7)]
    rows = list(Recipient.objects.filter(broadcast=broadcast))
    assert {r.status for r in rows} == {R.SENT}
    assert len({r.provider_id for r in rows}) == 7 and all(r.provider_id.startswith("SM") for r in rows)
    # The dossier has the messages, with the SIDs.
    assert (
        Message.objects.filter(provider_sid__in=[r.provider_id for r in rows], status="queued").count() == 7
    )
    broadcast.refresh_from_db()
    assert broadcast.status == "completed"
    assert str(broadcast.id) in heard
    progress = broadcast_progress(broadcast)
    assert (progress["sent"], progress["pending"], progress["percent"]) == (7, 0, 100.0)


def test_callbacks_move_recipients_to_delivered_or_failed_once(
    client, fake_twilio, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        broadcast = broadcast_create(name="b", channel="sms", body="Hi", recipients=_people(3)).broadcast
    posts = sorted(fake_twilio.posts(), key=lambda p: p.form["To"][0])
    first, second, third = (
        Recipient.objects.get(broadcast=broadcast, address=p.form["To"][0]) for p in posts
    )
    urls = [p.form["StatusCallback"][0] for p in posts]
    assert "message=" in urls[0] and f"ref=b%3A{first.id}" in urls[0]
    for status in ("queued", "sent", "delivered"):
        assert (
            status_callback(client, callback_url=urls[0], sid=first.provider_id, status=status).status_code
            == 204
        )
    status_callback(
        client, callback_url=urls[1], sid=second.provider_id, status="undelivered", ErrorCode="30003"
    )
    # A duplicate (Twilio retries) and a late lower status change nothing.
    status_callback(client, callback_url=urls[0], sid=first.provider_id, status="delivered")
    status_callback(client, callback_url=urls[0], sid=first.provider_id, status="sent")
    status_callback(
        client, callback_url=urls[1], sid=second.provider_id, status="delivered"
    )  # undelivered is final
    first.refresh_from_db(), second.refresh_from_db(), third.refresh_from_db()
    assert first.status == R.DELIVERED
    assert second.status == R.FAILED and second.reason.startswith("30003")
    assert third.status == R.SENT
    assert Message.objects.get(provider_sid=first.provider_id).status == "delivered"
    progress = broadcast_progress(broadcast)
    assert (progress["delivered"], progress["failed"], progress["sent"]) == (1, 1, 1)


def test_a_callback_before_our_write_finds_its_message_and_recipient(client, fake_twilio):
    broadcast = broadcast_create(
        name="b", channel="sms", body="Hi", recipients=_people(1), start=False
    ).broadcast
    Broadcast.objects.filter(id=broadcast.id).update(status="running")
    from broadcasts import engine

    batch = engine.batch_claim(broadcast_id=broadcast.id)
    item = batch.items[0]
    # The provider's callback lands while the batch is still sending (no SID saved yet).
    from agents.messaging.broadcast import callback_url

    url = callback_url(message_id=item["message_id"], ref=item["ref"])
    status_callback(client, callback_url=url, sid="SM" + "e" * 32, status="delivered")
    recipient = Recipient.objects.get(id=item["key"])
    assert recipient.status == R.DELIVERED
    assert Message.objects.get(id=item["message_id"]).provider_sid == "SM" + "e" * 32


def test_opted_out_contacts_get_nothing(fake_twilio, django_capture_on_commit_callbacks):
    contact = Contact.objects.create(name="Out", phone="+14155550101")
    Consent.objects.create(contact=contact, channel="sms", status=ConsentStatus.OPTED_OUT, changed_at=timezone.now(),
                           source="keyword")  # fmt: skip
    with django_capture_on_commit_callbacks(execute=True):
        broadcast = broadcast_create(name="b", channel="sms", body="Hi", recipients=_people(3)).broadcast
    assert sorted(_sent_to(fake_twilio)) == ["+14155550100", "+14155550102"]
    out = Recipient.objects.get(broadcast=broadcast, address="+14155550101")
    assert (out.status, out.contact_id) == (R.OPTED_OUT, contact.id)
    assert broadcast_progress(broadcast)["opted_out"] == 1


def test_quiet_hours_defer_then_send_later(fake_twilio, django_capture_on_commit_callbacks):
    now = timezone.now()
    Contact.objects.create(name="Night owl", phone="+14155550100", timezone="UTC")
    start = (now - timedelta(hours=1)).time().replace(second=0, microsecond=0)
    end = (now + timedelta(hours=1)).time().replace(second=0, microsecond=0)
    with django_capture_on_commit_callbacks(execute=True):
        broadcast = broadcast_create(name="b", channel="sms", body="Hi", recipients=_people(2), quiet_start=start,
                                     quiet_end=end).broadcast  # fmt: skip
    # Quiet now in the contact's zone: deferred, not dropped; a contact-less recipient (UTC too) as well.
    assert fake_twilio.posts() == []
    rows = list(Recipient.objects.filter(broadcast=broadcast))
    assert {r.status for r in rows} == {R.PENDING}
    assert all(r.not_before is not None and r.not_before > now for r in rows)
    # The quiet hours end: the next batch sends them.
    Recipient.objects.filter(broadcast=broadcast).update(not_before=now - timedelta(seconds=1))
    Broadcast.objects.filter(id=broadcast.id).update(quiet_start=time(3, 0), quiet_end=time(3, 0))
    _run(broadcast)
    assert sorted(_sent_to(fake_twilio)) == ["+14155550100", "+14155550101"]
    assert set(Recipient.objects.filter(broadcast=broadcast).values_list("status", flat=True)) == {R.SENT}


def test_whatsapp_outside_the_window_is_skipped_with_the_reason(
    fake_twilio, django_capture_on_commit_callbacks, settings
):
    settings.TWILIO_WHATSAPP_FROM = "whatsapp:+14155238886"
    Contact.objects.create(name="Recent", phone="+14155550100", last_inbound_whatsapp_at=timezone.now())
    with django_capture_on_commit_callbacks(execute=True):
        broadcast = broadcast_create(name="w", channel="whatsapp", body="Hi", recipients=_people(2)).broadcast
    assert _sent_to(fake_twilio) == ["whatsapp:+14155550100"]
    skipped = Recipient.objects.get(broadcast=broadcast, address="+14155550101")
    assert skipped.status == R.SKIPPED and skipped.reason.startswith("whatsapp_window_closed")
    assert broadcast_progress(broadcast)["skipped_by_reason"] == {skipped.reason: 1}


def test_a_refused_number_fails_with_the_provider_code(fake_twilio, django_capture_on_commit_callbacks):
    from tests.fakes.twilio import Scripted

    fake_twilio.script.append(Scripted(status=400, code=21211, message="Invalid 'To' Phone Number"))
    with django_capture_on_commit_callbacks(execute=True):
        broadcast = broadcast_create(name="b", channel="sms", body="Hi", recipients=_people(2)).broadcast
    statuses = dict(Recipient.objects.filter(broadcast=broadcast).values_list("address", "status"))
    assert sorted(statuses.values()) == [R.FAILED, R.SENT]
    failed = Recipient.objects.get(broadcast=broadcast, status=R.FAILED)
    assert failed.reason.startswith("21211")


def test_the_csv_lists_every_recipient_in_input_order(api, fake_twilio, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        broadcast = broadcast_create(
            name="b", channel="sms", body="Hi", recipients=_people(4), source="x"
        ).broadcast
    rows = list(recipients_csv_rows(broadcast))
    assert rows[0][:3] == ["line", "address", "status"] and [r[0] for r in rows[1:]] == [1, 2, 3, 4]
    response = api.get(f"/api/broadcasts/{broadcast.id}/recipients.csv")
    assert response.status_code == 200 and response["Content-Type"] == "text/csv"
    parsed = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert len(parsed) == 5 and {r[2] for r in parsed[1:]} == {"sent"}


def test_api_pause_resume_cancel_answer_and_refuse_what_cannot_be(api):
    created = api.post("/api/broadcasts/", {"name": "c", "channel": "sms", "body": "x", "recipients": _people(3)},
                       content_type="application/json").json()  # fmt: skip
    bid = created["id"]
    assert api.post(f"/api/broadcasts/{bid}/pause/").json()["status"] == "paused"
    assert api.post(f"/api/broadcasts/{bid}/pause/").status_code == 409
    assert api.post(f"/api/broadcasts/{bid}/resume/").json()["status"] == "running"
    cancelled = api.post(f"/api/broadcasts/{bid}/cancel/").json()
    assert cancelled["status"] == "cancelled" and cancelled["progress"]["cancelled"] == 3
    refused = api.post(f"/api/broadcasts/{bid}/resume/")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "conflict"
