"""django-anymail's real SendGrid backend against a local fake of the v3 Mail Send API: the
exact JSON that leaves, and how 429 / 5xx / 400 / 401 / timeouts drive retry, fallback and
failure."""

from __future__ import annotations

import base64

import pytest

from agents.email.services import unsubscribe_url
from dossiers.models import Email
from dossiers.services import artifact_store
from orchestrator.models import Task
from orchestrator.services import task_create
from orchestrator.states import TaskStatus
from tests.fakes.sendgrid import Answer

S = TaskStatus
pytestmark = pytest.mark.django_db


def run(capture, payload, contact=None) -> Task:
    with capture(execute=True):
        task, _ = task_create(type="email.send", payload=payload, contact_id=contact.id if contact else None)
    task.refresh_from_db()
    return task


def test_mail_send_body_is_exactly_what_sendgrid_documents(sendgrid, ada, django_capture_on_commit_callbacks):
    notes = artifact_store(content=b"line one\n", content_type="text/plain", kind="text", contact_id=ada.id)
    payload = {"subject": "Your order", "text": "Hello Ada,\nyour order shipped.", "reply_to": "help@example.com",
               "attachments": [{"artifact": str(notes.id), "filename": "notes.txt"}]}  # fmt: skip
    task = run(django_capture_on_commit_callbacks, payload, ada)

    email = Email.objects.get(task=task)
    [request] = sendgrid.received
    assert request.headers["Authorization"] == f"Bearer {sendgrid.api_key}"
    html = request.body["content"][1]["value"]
    assert "<p>Hello Ada,<br>your order shipped.</p>" in html
    assert request.body == {
        "from": {"name": "Comms Platform", "email": "no-reply@example.com"},
        "subject": "Your order",
        "personalizations": [{"to": [{"email": "ada@example.org"}]}],
        "content": [
            {"type": "text/plain", "value": "Hello Ada,\nyour order shipped."},
            {"type": "text/html", "value": html},
        ],
        # anymail leaves out SendGrid's default disposition ("attachment") and keeps the charset
        # Django gives a text attachment.
        "attachments": [
            {"content": base64.b64encode(b"line one\n").decode(), "type": 'text/plain; charset="utf-8"',
             "filename": "notes.txt"}
        ],
        "headers": {
            "List-Unsubscribe": f"<{unsubscribe_url(email_id=email.id)}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
        "categories": ["email.send"],
        "custom_args": {"task_id": str(task.id), "email_id": str(email.id)},
        "reply_to_list": [{"email": "help@example.com"}],
    }  # fmt: skip
    # Only our ids travel in custom args and categories: no name, no address.
    tagged = str(request.body["custom_args"]) + str(request.body["categories"])
    assert "ada" not in tagged.lower()

    assert task.status == S.IN_PROGRESS  # SendGrid's events finish it
    assert task.provider_id == sendgrid.message_ids[0]
    assert (email.provider, email.provider_message_id, email.status) == ("sendgrid", task.provider_id, "sent")
    assert email.html is not None and email.html.content_type.startswith("text/html")


def test_rate_limit_is_retried_through_sendgrid(sendgrid, ada, django_capture_on_commit_callbacks):
    sendgrid.script(
        Answer(429, {"errors": [{"message": "too many requests", "field": None}]}, {"Retry-After": "0"})
    )
    task = run(django_capture_on_commit_callbacks, {"subject": "Hi", "text": "Hello"}, ada)

    assert len(sendgrid.received) == 2
    assert task.status == S.IN_PROGRESS
    assert task.attempts == 2
    assert Email.objects.filter(task=task).count() == 1  # the retry reused the row


def test_bad_request_fails_the_task_with_sendgrids_reason(sendgrid, ada, django_capture_on_commit_callbacks):
    sendgrid.script(Answer(400, {"errors": [{"message": "The from address does not match a verified Sender Identity.", "field": "from"}]}))  # fmt: skip
    task = run(django_capture_on_commit_callbacks, {"subject": "Hi", "text": "Hello"}, ada)

    assert len(sendgrid.received) == 1  # never retried
    assert task.status == S.FAILED
    assert task.error_code == "sendgrid_rejected"
    assert "verified Sender Identity" in task.error_message
    assert sendgrid.api_key not in task.error_message
    assert Email.objects.get(task=task).status == "failed"


def test_deleted_attachment_fails_the_task(sendgrid, ada, django_capture_on_commit_callbacks):
    notes = artifact_store(content=b"x", content_type="text/plain", kind="text")
    notes_id = str(notes.id)
    notes.delete()  # (Django clears notes.id)
    task = run(
        django_capture_on_commit_callbacks,
        {"subject": "Hi", "text": "Hello", "attachments": [notes_id]},
        ada,
    )

    assert sendgrid.received == []
    assert (task.status, task.error_code) == (S.FAILED, "artifact_missing")


def test_server_errors_without_fallback_retry_then_fail(
    sendgrid, ada, settings, django_capture_on_commit_callbacks
):
    settings.TASK_MAX_ATTEMPTS = 2
    sendgrid.script(Answer(500), Answer(503))
    task = run(django_capture_on_commit_callbacks, {"subject": "Hi", "text": "Hello"}, ada)

    assert len(sendgrid.received) == 2
    assert task.status == S.FAILED
    assert task.error_code == "sendgrid_unavailable"
    assert "HTTP 503" in task.error_message


@pytest.mark.parametrize("answer", [Answer(502), Answer(401), Answer(403)], ids=["5xx", "401", "403"])
def test_transient_sendgrid_failure_falls_back_to_smtp(
    answer, sendgrid, smtp_server, ada, settings, django_capture_on_commit_callbacks
):
    settings.EMAIL_FALLBACK_PROVIDER = "smtp"
    sendgrid.script(answer)
    task = run(django_capture_on_commit_callbacks, {"subject": "Hi", "text": "Hello"}, ada)

    assert len(sendgrid.received) == 1
    [message] = smtp_server.messages()
    assert message["X-Comms-Task-Id"] == str(task.id)
    email = Email.objects.get(task=task)
    assert email.provider == "smtp"
    assert email.provider_message_id == message["Message-ID"]
    assert task.status == S.SUCCEEDED  # SMTP acceptance is the last word
    assert task.attempts == 1
    failed = email.events.get(event="provider_failed")
    assert failed.detail["provider"] == "sendgrid"


def test_timeout_falls_back_to_smtp(sendgrid, smtp_server, ada, settings, django_capture_on_commit_callbacks):
    settings.EMAIL_FALLBACK_PROVIDER = "smtp"
    settings.EMAIL_TIMEOUT = 0.3
    sendgrid.script(Answer(202, delay=1.0))
    task = run(django_capture_on_commit_callbacks, {"subject": "Hi", "text": "Hello"}, ada)

    assert Email.objects.get(task=task).provider == "smtp"
    assert len(smtp_server.messages()) == 1
    assert task.status == S.SUCCEEDED


def test_rate_limit_does_not_fall_back(
    sendgrid, smtp_server, ada, settings, django_capture_on_commit_callbacks
):
    settings.EMAIL_FALLBACK_PROVIDER = "smtp"
    sendgrid.script(Answer(429, headers={"Retry-After": "0"}))
    task = run(django_capture_on_commit_callbacks, {"subject": "Hi", "text": "Hello"}, ada)

    assert smtp_server.messages() == []
    assert Email.objects.get(task=task).provider == "sendgrid"


def test_both_providers_down_lists_both_reasons(
    sendgrid, smtp_server, ada, settings, django_capture_on_commit_callbacks
):
    settings.EMAIL_FALLBACK_PROVIDER = "smtp"
    settings.TASK_MAX_ATTEMPTS = 1
    settings.EMAIL_PORT = 1  # nothing listens there
    sendgrid.script(Answer(500))
    task = run(django_capture_on_commit_callbacks, {"subject": "Hi", "text": "Hello"}, ada)

    assert task.status == S.FAILED
    assert "sendgrid: SendGrid failed (HTTP 500)" in task.error_message
    assert "smtp: SMTP server unreachable" in task.error_message


def test_opted_out_contact_is_refused_before_sending(sendgrid, ada, django_capture_on_commit_callbacks):
    from dossiers.services import consent_set

    consent_set(contact_id=ada.id, channel="email", status="opted_out", source="api")
    task = run(django_capture_on_commit_callbacks, {"subject": "Hi", "text": "Hello"}, ada)

    assert sendgrid.received == []
    assert (task.status, task.error_code) == (S.FAILED, "opted_out")


def test_hard_bounced_address_is_refused(sendgrid, ada, django_capture_on_commit_callbacks):
    ada.email_undeliverable = True
    ada.save()
    task = run(django_capture_on_commit_callbacks, {"subject": "Hi", "text": "Hello"}, ada)

    assert sendgrid.received == []
    assert task.error_code == "undeliverable"
