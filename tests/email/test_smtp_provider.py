"""Django's SMTP backend against a real local SMTP server (aiosmtpd)."""

from __future__ import annotations

import pytest

from agents.email.providers import Attachment, FallbackError, OutgoingEmail
from agents.email.providers.smtp import SmtpProvider
from orchestrator.errors import PermanentError

MESSAGE = OutgoingEmail(
    task_id="7d1c5a52-54a4-4a36-8f57-2b6c1d8f0a11",
    email_id=42,
    from_email="Comms Platform <no-reply@example.com>",
    to="ada@example.org",
    subject="Your invoice",
    text="Hello Ada, your invoice is attached.",
    html="<p>Hello Ada, your invoice is <b>attached</b>.</p>",
    reply_to="billing@example.com",
    list_unsubscribe="<https://comms.example.com/email/unsubscribe/42:abc/>",
    attachments=(Attachment("invoice.pdf", b"%PDF-1.4 fake", "application/pdf"),),
)


def test_received_message_has_both_parts_the_attachment_and_our_headers(smtp_server):
    result = SmtpProvider().send(MESSAGE)

    [envelope] = smtp_server.envelopes
    assert envelope.mail_from == "no-reply@example.com"
    assert envelope.rcpt_tos == ["ada@example.org"]
    [message] = smtp_server.messages()
    assert message["Subject"] == "Your invoice"
    assert message["To"] == "ada@example.org"
    assert message["Reply-To"] == "billing@example.com"
    assert message["X-Comms-Task-Id"] == MESSAGE.task_id
    assert message["X-Comms-Email-Id"] == "42"
    assert message["List-Unsubscribe"] == MESSAGE.list_unsubscribe
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["Message-ID"] == result.message_id
    assert result.message_id.endswith("@example.com>")
    assert (result.provider, result.awaits_events) == ("smtp", False)

    assert message.get_content_type() == "multipart/mixed"
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert text.get_content().strip() == MESSAGE.text
    assert html.get_content().strip() == MESSAGE.html
    [attachment] = list(message.iter_attachments())
    assert attachment.get_filename() == "invoice.pdf"
    assert attachment.get_content_type() == "application/pdf"
    assert attachment.get_content() == b"%PDF-1.4 fake"


def test_permanent_refusal_of_the_recipient_is_permanent(smtp_server):
    smtp_server.refuse["ada@example.org"] = "550 5.1.1 No such user"
    with pytest.raises(PermanentError) as exc:
        SmtpProvider().send(MESSAGE)
    assert exc.value.code == "smtp_rejected"


def test_temporary_refusal_may_fall_back(smtp_server):
    smtp_server.refuse["ada@example.org"] = "451 4.3.0 Try again later"
    with pytest.raises(FallbackError) as exc:
        SmtpProvider().send(MESSAGE)
    assert exc.value.code == "smtp_deferred"


def test_unreachable_server_is_transient(settings):
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", 1
    with pytest.raises(FallbackError) as exc:
        SmtpProvider().send(MESSAGE)
    assert exc.value.code == "smtp_unavailable"


def test_smtp_as_main_provider_finishes_the_task(
    smtp_server, settings, ada, django_capture_on_commit_callbacks
):
    from dossiers.models import Email
    from orchestrator.services import task_create

    settings.EMAIL_SIMULATED = False
    settings.EMAIL_PROVIDER = "smtp"
    with django_capture_on_commit_callbacks(execute=True):
        task, _ = task_create(type="email.send", contact_id=ada.id,
                              payload={"subject": "Hi", "template": "notification", "context": {"message": "Welcome aboard."}})  # fmt: skip
    task.refresh_from_db()
    assert task.status == "succeeded"
    [message] = smtp_server.messages()
    plain = message.get_body(preferencelist=("plain",)).get_content().replace("\r\n", "\n")
    assert plain.strip() == "Hi Ada Lovelace,\n\nWelcome aboard."
    assert "<p>Welcome aboard.</p>" in message.get_body(preferencelist=("html",)).get_content()
    assert Email.objects.get(task=task).status == "sent"


def test_a_templated_plain_text_part_is_not_html_escaped(
    smtp_server, settings, ada, django_capture_on_commit_callbacks
):
    """The ``.txt`` template renders values as they are (``&``, ``<``, quotes); the HTML part
    escapes them."""
    from orchestrator.services import task_create

    settings.EMAIL_SIMULATED = False
    settings.EMAIL_PROVIDER = "smtp"
    line = 'Tom & Jerry\'s <b>"deal"</b>'
    with django_capture_on_commit_callbacks(execute=True):
        task, _ = task_create(type="email.send", contact_id=ada.id,
                              payload={"subject": "Hi", "template": "notification", "context": {"message": line}})  # fmt: skip
    task.refresh_from_db()
    assert task.status == "succeeded"
    [message] = smtp_server.messages()
    plain = message.get_body(preferencelist=("plain",)).get_content().replace("\r\n", "\n")
    assert plain.strip() == f"Hi Ada Lovelace,\n\n{line}"
    html = message.get_body(preferencelist=("html",)).get_content()
    assert "Tom &amp; Jerry&#x27;s &lt;b&gt;&quot;deal&quot;&lt;/b&gt;" in html
