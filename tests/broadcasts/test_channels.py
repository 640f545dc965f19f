"""Broadcasts on email (a real local SMTP server; the fake SendGrid and its signed events),
``notify`` routing per recipient, and a body written once from a prompt by the content agent."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from django.utils import timezone

from agents.content import broadcast as content_broadcast
from agents.email import event_keys
from broadcasts import engine, tasks
from broadcasts.models import Recipient, RecipientStatus
from broadcasts.services import broadcast_create, broadcast_preview
from dossiers.models import Consent, ConsentStatus, Contact, Email
from orchestrator.models import RoutingRule
from tests.fakes.smtp import Collector, SmtpServer

pytestmark = pytest.mark.django_db
R = RecipientStatus


class PeerCollector(Collector):
    """Also keeps the SMTP session (client address and port) each message came over."""

    def __init__(self) -> None:
        super().__init__()
        self.peers: list = []

    async def handle_DATA(self, server, session, envelope):
        self.peers.append(session.peer)
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def smtp(settings):
    server = SmtpServer()
    server.collector = PeerCollector()
    server.controller.handler = server.collector
    with server:
        settings.EMAIL_SIMULATED = False
        settings.EMAIL_PROVIDER = "smtp"
        settings.EMAIL_FALLBACK_PROVIDER = ""
        settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", server.port
        settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
        settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
        yield server.collector


@pytest.fixture
def event_key(settings) -> ec.EllipticCurvePrivateKey:
    private = ec.generate_private_key(ec.SECP256R1())
    settings.SENDGRID_EVENT_PUBLIC_KEY = event_keys.public_key_b64(private)
    return private


def _run(broadcast) -> None:
    tasks.send_batch.apply(args=[str(broadcast.id)])


def _post_events(client, key, batch: list[dict]) -> int:
    raw = json.dumps(batch).encode()
    ts = str(int(time.time()))
    return client.post("/webhooks/sendgrid/events/", data=raw, content_type="application/json",
                       HTTP_X_TWILIO_EMAIL_EVENT_WEBHOOK_SIGNATURE=event_keys.sign(key, ts, raw),
                       HTTP_X_TWILIO_EMAIL_EVENT_WEBHOOK_TIMESTAMP=ts).status_code  # fmt: skip


# --- email ------------------------------------------------------------------------------------


def test_email_broadcast_goes_over_one_smtp_session_with_consent_and_bounces_respected(
    smtp, settings, django_capture_on_commit_callbacks
):
    settings.BROADCAST_BATCH_SIZE = 10  # one batch: one connection for all its emails
    out = Contact.objects.create(name="Out", email="out@example.org")
    Consent.objects.create(
        contact=out, channel="email", status=ConsentStatus.OPTED_OUT, changed_at=timezone.now()
    )
    Contact.objects.create(name="Bounced", email="bounced@example.org", email_undeliverable=True)
    people = [{"to": f"p{i}@example.org", "variables": {"name": f"P{i}"}} for i in range(4)]
    people[0]["variables"]["name"] = "<Ada & co>"
    recipients = [*people, {"to": "out@example.org", "variables": {"name": "Out"}},
                  {"to": "bounced@example.org", "variables": {"name": "B"}}, {"to": "not-an-address"}]  # fmt: skip
    with django_capture_on_commit_callbacks(execute=True):
        created = broadcast_create(name="news", channel="email", subject="Hello {{ name }}",
                                   body="Dear {{ name }}, news.", html="<p>Dear <b>{{ name }}</b></p>",
                                   recipients=recipients)  # fmt: skip
    assert created.rejected == [{"line": 7, "address": "not-an-address", "reason": "not an email address"}]
    messages = smtp.messages()
    assert sorted(m["To"] for m in messages) == [f"p{i}@example.org" for i in range(4)]
    first = next(m for m in messages if m["To"] == "p0@example.org")
    assert first["Subject"] == "Hello <Ada & co>"
    assert first.get_body(("plain",)).get_content().strip() == "Dear <Ada & co>, news."
    assert "<b>&lt;Ada &amp; co&gt;</b>" in first.get_body(("html",)).get_content()
    assert str(first["List-Unsubscribe"]).strip().startswith("<https://comms.example.com/email/unsubscribe/")
    assert len(set(smtp.peers)) == 1, "one SMTP session for the batch"
    rows = {r.address: r for r in Recipient.objects.filter(broadcast=created.broadcast)}
    assert rows["out@example.org"].status == R.OPTED_OUT
    assert rows["bounced@example.org"].status == R.SKIPPED
    assert "hard-bounced" in rows["bounced@example.org"].reason
    sent = [rows[f"p{i}@example.org"] for i in range(4)]
    assert {r.status for r in sent} == {R.SENT} and all(r.provider_id.startswith("<") for r in sent)
    emails = Email.objects.filter(correlation_id=f"broadcast:{created.broadcast.id}")
    assert sorted(emails.values_list("status", "provider")) == [("sent", "smtp")] * 4
    created.broadcast.refresh_from_db()
    assert created.broadcast.status == "completed"


def test_email_broadcast_through_sendgrid_events_reach_the_recipients(
    client, sendgrid, event_key, django_capture_on_commit_callbacks
):
    people = [{"to": f"p{i}@example.org", "variables": {"name": f"P{i}"}} for i in range(3)]
    with django_capture_on_commit_callbacks(execute=True):
        broadcast = broadcast_create(name="sg", channel="email", subject="Hi {{ name }}", body="Hello {{ name }}",
                                     recipients=people).broadcast  # fmt: skip
    assert len(sendgrid.received) == 3
    by_to = {r.body["personalizations"][0]["to"][0]["email"]: r.body for r in sendgrid.received}
    rows = {r.address: r for r in Recipient.objects.filter(broadcast=broadcast)}
    assert by_to["p1@example.org"]["subject"] == "Hi P1"
    assert by_to["p1@example.org"]["custom_args"]["ref"] == f"b:{rows['p1@example.org'].id}"
    assert {r.provider_id for r in rows.values()} == set(sendgrid.message_ids)

    def event(address: str, name: str, event_id: str, **extra) -> dict:
        row = rows[address]
        email = Email.objects.get(provider_message_id=row.provider_id)
        return {"email": address, "timestamp": int(time.time()), "event": name, "sg_event_id": event_id,
                "sg_message_id": f"{row.provider_id}.filter-1", "task_id": "", "email_id": str(email.id),
                "ref": f"b:{row.id}", **extra}  # fmt: skip

    batch = [event("p0@example.org", "delivered", "e0"),
             event("p1@example.org", "bounce", "e1", type="bounce", reason="550 5.1.1 no such user")]  # fmt: skip
    assert _post_events(client, event_key, batch) == 200
    assert _post_events(client, event_key, batch) == 200  # a retried batch changes nothing
    assert _post_events(client, event_key, [event("p0@example.org", "bounce", "e2", type="bounce")]) == 200
    statuses = {
        a: (r.status, r.reason) for a, r in ((a, Recipient.objects.get(id=r.id)) for a, r in rows.items())
    }
    assert statuses["p0@example.org"] == (R.DELIVERED, "")  # a late bounce never lowers delivered
    assert statuses["p1@example.org"][0] == R.FAILED and "550 5.1.1" in statuses["p1@example.org"][1]
    assert statuses["p2@example.org"] == (R.SENT, "")


def test_email_lost_worker_is_not_sent_twice(smtp, settings):
    broadcast = broadcast_create(name="lost", channel="email", subject="S", body="B", start=False,
                                 recipients=[{"to": "a@example.org"}, {"to": "b@example.org"}]).broadcast  # fmt: skip
    broadcast.status = "running"
    broadcast.save(update_fields=["status"])
    batch = engine.batch_claim(broadcast_id=broadcast.id)  # claimed and prepared; the worker dies here
    assert len(batch.items) == 2
    first = batch.items[0]
    # One of them had been accepted (its id recorded) before the worker died.
    Email.objects.filter(id=first["message_id"]).update(provider_message_id="<kept@example.org>")
    Recipient.objects.update(lease_until=timezone.now() - timedelta(seconds=1))
    counts = engine.reconcile()
    assert counts == {"sent": 1, "pending": 0, "failed": 1}
    rows = {r.id: r for r in Recipient.objects.filter(broadcast=broadcast)}
    assert rows[first["key"]].status == R.SENT and rows[first["key"]].provider_id == "<kept@example.org>"
    other = rows[batch.items[1]["key"]]
    assert other.status == R.FAILED and other.reason.startswith("email_unknown")
    assert smtp.messages() == []  # nothing was sent by the reconciler


# --- notify -----------------------------------------------------------------------------------


def test_notify_routes_each_recipient_to_its_first_reachable_channel(
    fake_twilio, smtp, django_capture_on_commit_callbacks
):
    RoutingRule.objects.create(
        name="sms first", position=1, task_types=["notify"], channels=["voice", "sms", "email"]
    )
    phone = Contact.objects.create(name="Phone", phone="+14155550111", email="phone@example.org")
    mail = Contact.objects.create(name="Mail", email="mail@example.org")
    no_sms = Contact.objects.create(name="NoSms", phone="+14155550112", email="nosms@example.org")
    Consent.objects.create(
        contact=no_sms, channel="sms", status=ConsentStatus.OPTED_OUT, changed_at=timezone.now()
    )
    nowhere = Contact.objects.create(name="Nowhere")
    with django_capture_on_commit_callbacks(execute=True):
        created = broadcast_create(
            name="n", channel="notify", subject="News for {{ name }}", body="Hi {{ name }}",
            contact_list=[c.id for c in (phone, mail, no_sms, nowhere)],
        )  # fmt: skip
    assert [(p.form["To"][0], p.form["Body"][0]) for p in fake_twilio.posts()] == [
        ("+14155550111", "Hi Phone")
    ]
    assert sorted((m["To"], m["Subject"]) for m in smtp.messages()) == [
        ("mail@example.org", "News for Mail"), ("nosms@example.org", "News for NoSms")]  # fmt: skip
    rows = {r.contact_id: r for r in Recipient.objects.filter(broadcast=created.broadcast)}
    assert (rows[phone.id].status, rows[phone.id].channel) == (R.SENT, "sms")
    assert (rows[mail.id].status, rows[mail.id].channel) == (R.SENT, "email")
    assert (rows[no_sms.id].status, rows[no_sms.id].channel) == (R.SENT, "email")
    assert rows[nowhere.id].status == R.SKIPPED
    assert (
        rows[nowhere.id].reason.startswith("no reachable channel")
        and "sms: no address" in rows[nowhere.id].reason
    )


def test_notify_recipients_must_be_contacts(api):
    known = Contact.objects.create(name="K", phone="+14155550120")
    response = api.post("/api/broadcasts/", {
        "name": "n", "channel": "notify", "body": "Hi",
        "recipients": [{"to": "+14155550121"}, {"contact_id": "8c5b5a1e-0000-4000-8000-000000000000"},
                       {"contact_id": str(known.id)}],
    }, content_type="application/json")  # fmt: skip
    assert response.status_code == 201, response.content
    rejected = response.json()["rejected"]
    assert [(r["line"], r["reason"][:20]) for r in rejected] == [
        (1, "a notify recipient n"),
        (2, "no such contact"),
    ]
    assert response.json()["progress"]["accepted"] == 1


# --- prompt -----------------------------------------------------------------------------------


def test_prompt_body_is_written_once_and_filled_per_recipient(
    fake_twilio, monkeypatch, django_capture_on_commit_callbacks
):
    calls = []
    real = content_broadcast.generate_text
    monkeypatch.setattr(content_broadcast, "generate_text", lambda **kw: calls.append(kw) or real(**kw))
    people = [{"to": f"+1415555{200 + i:04d}", "variables": {"name": f"P{i}"}} for i in range(5)]
    shown = broadcast_preview(channel="sms", prompt="our shop opens on Sunday", recipients=people, limit=2)
    assert [s["body"].split(",")[0] for s in shown] == ["Hi P0", "Hi P1"]
    with django_capture_on_commit_callbacks(execute=True):
        broadcast = broadcast_create(name="p", channel="sms", prompt="our shop opens on Sunday",
                                     recipients=people).broadcast  # fmt: skip
    assert len(calls) == 2  # once for the preview, once for the broadcast: not once per recipient
    broadcast.refresh_from_db()  # written by the task broadcasts.write_body, off the create call
    assert broadcast.status == "completed"
    assert "{{ name }}" in broadcast.body and broadcast.prompt == "our shop opens on Sunday"
    bodies = sorted(p.form["Body"][0] for p in fake_twilio.posts())
    assert len(bodies) == 5 and bodies[0].startswith("Hi P0, our shop opens on Sunday")
    assert bodies[0] == shown[0]["body"]


# --- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"channel": "email", "body": "Hi"}, "subject"),
        ({"channel": "email", "subject": "S", "template": "welcome"}, "template"),
        ({"channel": "sms", "body": "Hi", "subject": "S"}, "subject"),
        ({"channel": "sms", "body": "Hi", "prompt": "write"}, "body"),
    ],
)
def test_bad_combinations_are_400_naming_the_field(api, payload, field):
    body = {"name": "v", "recipients": [{"to": "a@example.org"}], **payload}
    response = api.post("/api/broadcasts/", body, content_type="application/json")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid" and field in error["fields"]
