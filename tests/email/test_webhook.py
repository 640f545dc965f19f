"""SendGrid's signed event webhook with a real ECDSA P-256 key pair made in the test."""

from __future__ import annotations

import json
import time

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from django.utils import timezone

from agents.common.models import WebhookEvent
from agents.email import event_keys
from dossiers.models import Email, EmailEvent
from dossiers.services import consent_status
from orchestrator.models import Task
from orchestrator.states import TaskStatus

S = TaskStatus
URL = "/webhooks/sendgrid/events/"
pytestmark = pytest.mark.django_db


@pytest.fixture
def key(settings) -> ec.EllipticCurvePrivateKey:
    private = ec.generate_private_key(ec.SECP256R1())
    settings.SENDGRID_EVENT_PUBLIC_KEY = event_keys.public_key_b64(private)
    return private


@pytest.fixture
def email(ada) -> Email:
    task = Task.objects.create(type="email.send", channel="email", status=S.IN_PROGRESS, contact=ada,
                               provider_id="W86EgYT6SQKk0lRflfLRsA")  # fmt: skip
    return Email.objects.create(contact=ada, task=task, from_address="no-reply@example.com",
                                to_address=ada.email, subject="Hi", provider="sendgrid",
                                provider_message_id="W86EgYT6SQKk0lRflfLRsA", status="sent",
                                occurred_at=timezone.now())  # fmt: skip


def ev(email: Email, name: str, event_id: str, **extra) -> dict:
    return {
        "email": email.to_address, "timestamp": int(time.time()), "event": name, "sg_event_id": event_id,
        "sg_message_id": f"{email.provider_message_id}.filterdrecv-p3mdw1-1-5F5FC76C-9.0",
        "smtp-id": f"<{email.provider_message_id}@ismtpd0001p1mdw1.sendgrid.net>", "category": ["email.send"],
        "task_id": str(email.task_id), "email_id": str(email.id), **extra,
    }  # fmt: skip


def post(
    client,
    key,
    batch,
    *,
    timestamp: int | None = None,
    body: bytes | None = None,
    signature: str | None = None,
):
    raw = json.dumps(batch).encode()
    ts = str(timestamp if timestamp is not None else int(time.time()))
    sig = signature if signature is not None else event_keys.sign(key, ts, raw)
    return client.post(URL, data=body if body is not None else raw, content_type="application/json",
                       HTTP_X_TWILIO_EMAIL_EVENT_WEBHOOK_SIGNATURE=sig,
                       HTTP_X_TWILIO_EMAIL_EVENT_WEBHOOK_TIMESTAMP=ts)  # fmt: skip


def state(email: Email) -> tuple[str, str, int]:
    email.refresh_from_db()
    email.task.refresh_from_db()
    return email.status, email.task.status, email.events.count()


def test_valid_batch_moves_email_and_task(client, key, email):
    response = post(client, key, [ev(email, "processed", "e1"), ev(email, "delivered", "e2")])

    assert response.status_code == 200, response.content
    assert state(email) == ("delivered", S.SUCCEEDED, 2)
    assert list(email.events.values_list("event", flat=True)) == ["processed", "delivered"]


def test_tampered_body_is_refused(client, key, email):
    good = [ev(email, "delivered", "e1")]
    ts = int(time.time())
    signature = event_keys.sign(key, str(ts), json.dumps(good).encode())
    tampered = json.dumps([ev(email, "bounce", "e1", type="bounce")]).encode()

    response = post(client, key, good, timestamp=ts, body=tampered, signature=signature)

    assert response.status_code == 403
    assert state(email) == ("sent", S.IN_PROGRESS, 0)
    assert WebhookEvent.objects.count() == 0


def test_wrong_key_is_refused(client, key, email):
    other = ec.generate_private_key(ec.SECP256R1())
    assert post(client, other, [ev(email, "delivered", "e1")]).status_code == 403
    assert state(email) == ("sent", S.IN_PROGRESS, 0)


def test_missing_or_garbled_signature_is_refused(client, key, email):
    assert post(client, key, [ev(email, "delivered", "e1")], signature="").status_code == 403
    assert post(client, key, [ev(email, "delivered", "e1")], signature="not base64!").status_code == 403
    response = client.post(
        URL, data=json.dumps([ev(email, "delivered", "e1")]), content_type="application/json"
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "invalid_signature"


def test_timestamp_older_than_the_tolerance_is_refused(client, key, email, settings):
    settings.SENDGRID_EVENT_MAX_AGE_SECONDS = 3600
    old = int(time.time()) - 3601
    assert post(client, key, [ev(email, "delivered", "e1")], timestamp=old).status_code == 403
    within = int(time.time()) - 3500
    assert post(client, key, [ev(email, "delivered", "e1")], timestamp=within).status_code == 200


def test_no_key_configured_in_production_refuses_everything(client, key, email, settings):
    settings.SENDGRID_EVENT_PUBLIC_KEY = ""
    settings.TEST_MODE = False
    assert post(client, key, [ev(email, "delivered", "e1")]).status_code == 403


def test_duplicate_batch_changes_nothing(client, key, email):
    batch = [ev(email, "processed", "e1"), ev(email, "delivered", "e2")]
    post(client, key, batch)
    events_before = email.task.events.count()

    response = post(client, key, batch)

    assert response.status_code == 200
    assert state(email) == ("delivered", S.SUCCEEDED, 2)
    assert email.task.events.count() == events_before
    assert list(
        WebhookEvent.objects.filter(provider="sendgrid").values_list("outcome", flat=True).order_by("id")
    ) == [
        "processed",
        "delivered",
    ]


def test_event_repeated_in_a_different_batch_is_applied_once(client, key, email):
    post(client, key, [ev(email, "processed", "e1"), ev(email, "delivered", "e2")])
    response = post(client, key, [ev(email, "delivered", "e2"), ev(email, "open", "e3")])

    assert response.status_code == 200
    assert state(email) == ("opened", S.SUCCEEDED, 3)
    assert EmailEvent.objects.filter(provider_event_id="e2").count() == 1


def test_late_event_never_regresses(client, key, email):
    post(client, key, [ev(email, "delivered", "e2")])
    post(client, key, [ev(email, "processed", "e1"), ev(email, "deferred", "e0")])

    assert state(email) == ("delivered", S.SUCCEEDED, 3)


def test_hard_bounce_fails_the_task_and_marks_the_address(client, key, email, ada):
    reason = "550 5.1.1 The email account that you tried to reach does not exist."
    post(client, key, [ev(email, "bounce", "e1", type="bounce", reason=reason, status="5.1.1")])

    assert state(email)[:2] == ("bounced", S.FAILED)
    assert email.task.error_code == "email_bounced"
    assert email.task.error_message == reason
    ada.refresh_from_db()
    assert ada.email_undeliverable is True


def test_blocked_bounce_fails_but_keeps_the_address(client, key, email, ada):
    post(client, key, [ev(email, "bounce", "e1", type="blocked", reason="421 try later")])

    assert state(email)[:2] == ("bounced", S.FAILED)
    ada.refresh_from_db()
    assert ada.email_undeliverable is False


def test_dropped_fails_the_task(client, key, email):
    post(client, key, [ev(email, "dropped", "e1", reason="Bounced Address")])
    assert state(email)[:2] == ("dropped", S.FAILED)
    assert email.task.error_code == "email_dropped"


def test_bounce_after_delivered_keeps_the_task_succeeded(client, key, email):
    post(client, key, [ev(email, "delivered", "e1")])
    response = post(client, key, [ev(email, "bounce", "e2", type="bounce", reason="late")])

    assert response.status_code == 200
    assert state(email)[:2] == ("bounced", S.SUCCEEDED)


@pytest.mark.parametrize("name", ["unsubscribe", "group_unsubscribe", "spamreport"])
def test_unsubscribe_and_spam_report_opt_the_contact_out(client, key, email, ada, name):
    post(client, key, [ev(email, "delivered", "e1"), ev(email, name, "e2")])

    assert consent_status(contact_id=ada.id, channel="email") == "opted_out"
    assert ada.consent_changes.get().detail == f"sendgrid {name}"
    assert state(email)[0] == "delivered"


def test_event_found_by_message_id_without_custom_args(client, key, email):
    event = ev(email, "delivered", "e1")
    del event["email_id"], event["task_id"]
    post(client, key, [event])
    assert state(email)[:2] == ("delivered", S.SUCCEEDED)


def test_unknown_or_unmatched_events_are_stored_not_applied(client, key, email):
    stranger = {"event": "delivered", "sg_event_id": "x1", "sg_message_id": "nope.filter", "timestamp": 1}
    response = post(client, key, [ev(email, "mystery", "e1"), stranger])

    assert response.status_code == 200
    assert state(email) == ("sent", S.IN_PROGRESS, 0)
    outcomes = set(WebhookEvent.objects.values_list("outcome", flat=True))
    assert outcomes == {"unknown:mystery", "unmatched"}


def test_signed_body_that_is_not_an_event_array_is_400(client, key, email):
    assert post(client, key, {"event": "delivered"}).status_code == 400


def test_queries_per_event_are_fixed(client, key, email):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    post(client, key, [ev(email, "delivered", "e0"), ev(email, "open", "o0")])

    def count(batch) -> int:
        with CaptureQueriesContext(connection) as queries:
            assert post(client, key, batch).status_code == 200
        return len([q for q in queries.captured_queries if "SAVEPOINT" not in q["sql"]])

    one = count([ev(email, "open", "o1")])
    five = count([ev(email, "open", f"o{i + 2}") for i in range(5)])
    # Insert the WebhookEvent, find the email (with its task), insert the EmailEvent, mark
    # the WebhookEvent processed; the task is final, so no transition: nothing more.
    assert one == 4
    assert five == 5 * one


def test_click_and_resubscribe_come_through_anymails_normalised_events(client, key, email, ada):
    """click → anymail CLICKED → ``clicked``; group_resubscribe → SUBSCRIBED: recorded only."""
    post(
        client,
        key,
        [ev(email, "click", "c1", url="https://example.com/x"), ev(email, "group_resubscribe", "r1")],
    )

    assert state(email) == ("clicked", S.SUCCEEDED, 2)
    clicked = email.events.get(event="click")
    assert clicked.detail["url"] == "https://example.com/x"  # the raw SendGrid event is kept
    assert clicked.provider_event_id == "c1"  # and SendGrid's event id
    assert consent_status(contact_id=ada.id, channel="email") == "unknown"


def test_normalised_event_uses_sendgrids_timestamp(client, key, email):
    post(client, key, [ev(email, "delivered", "e1", timestamp=1_790_000_000)])
    assert email.events.get().occurred_at.timestamp() == 1_790_000_000


@pytest.mark.parametrize("timestamp", ["soon", 10**20, None], ids=["text", "out-of-range", "null"])
def test_event_with_an_odd_timestamp_is_applied_at_receipt(client, key, email, timestamp):
    before = timezone.now()
    response = post(client, key, [ev(email, "delivered", "e1", timestamp=timestamp)])

    assert response.status_code == 200
    assert state(email)[:2] == ("delivered", S.SUCCEEDED)
    assert email.events.get().occurred_at >= before
    assert email.events.get().detail["timestamp"] == timestamp  # stored as it came


def test_event_without_a_name_is_stored_not_applied(client, key, email):
    event = ev(email, "delivered", "e1")
    del event["event"]
    assert post(client, key, [event]).status_code == 200
    assert state(email) == ("sent", S.IN_PROGRESS, 0)
    assert WebhookEvent.objects.get().outcome == "unknown:"


def test_pem_key_is_accepted_too(client, email, settings):
    from cryptography.hazmat.primitives import serialization

    private = ec.generate_private_key(ec.SECP256R1())
    settings.SENDGRID_EVENT_PUBLIC_KEY = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    assert post(client, private, [ev(email, "delivered", "e1")]).status_code == 200
    assert post(client, ec.generate_private_key(ec.SECP256R1()), [ev(email, "open", "e2")]).status_code == 403
