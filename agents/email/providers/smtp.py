"""Any SMTP server through Django's SMTP email backend.

SMTP has no delivery callbacks: the server accepting the message is the last thing we
learn, so the task succeeds there. Our ids travel in ``X-Comms-*`` headers (bounces that
come back by mail can be matched with them).
"""

from __future__ import annotations

import smtplib
from email.utils import make_msgid, parseaddr

from django.core.mail import EmailMultiAlternatives, get_connection

from agents.common.errors import PermanentError
from agents.email.providers import EmailProvider, FallbackError, OutgoingEmail, SendResult


def build_message(message: OutgoingEmail, connection=None) -> EmailMultiAlternatives:
    domain = parseaddr(message.from_email)[1].rpartition("@")[2] or "localhost"
    headers = {
        "Message-ID": make_msgid(domain=domain),
        "X-Comms-Task-Id": message.task_id,
        "X-Comms-Email-Id": str(message.email_id),
    }
    if message.list_unsubscribe:
        headers["List-Unsubscribe"] = message.list_unsubscribe
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    email = EmailMultiAlternatives(
        subject=message.subject,
        body=message.text,
        from_email=message.from_email,
        to=[message.to],
        reply_to=[message.reply_to] if message.reply_to else None,
        headers=headers,
        connection=connection,
    )
    if message.html:
        email.attach_alternative(message.html, "text/html")
    for a in message.attachments:
        email.attach(a.filename, a.content, a.content_type)
    return email


class SmtpProvider(EmailProvider):
    name = "smtp"

    def send(self, message: OutgoingEmail) -> SendResult:
        connection = get_connection("django.core.mail.backends.smtp.EmailBackend", fail_silently=False)
        email = build_message(message, connection)
        try:
            email.send()
        except smtplib.SMTPRecipientsRefused as exc:
            codes = sorted({code for code, _ in exc.recipients.values()})
            if codes and all(400 <= c < 500 for c in codes):
                raise FallbackError(
                    f"SMTP server deferred the recipient ({codes})", code="smtp_deferred"
                ) from None
            raise PermanentError(
                f"SMTP server refused the recipient ({codes})", code="smtp_rejected"
            ) from None
        except smtplib.SMTPResponseException as exc:
            text = f"SMTP {exc.smtp_code}: {_text(exc.smtp_error)}"
            if 400 <= exc.smtp_code < 500 or isinstance(exc, smtplib.SMTPAuthenticationError):
                raise FallbackError(text, code="smtp_unavailable") from None
            raise PermanentError(text, code="smtp_rejected") from None
        except (TimeoutError, smtplib.SMTPException, OSError) as exc:
            raise FallbackError(
                f"SMTP server unreachable: {type(exc).__name__}", code="smtp_unavailable"
            ) from None
        return SendResult(
            provider=self.name, message_id=email.extra_headers["Message-ID"], awaits_events=False
        )


def _text(value: bytes | str) -> str:
    return (value.decode(errors="replace") if isinstance(value, bytes) else str(value))[:300]
