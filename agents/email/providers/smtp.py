"""Any SMTP server through Django's SMTP email backend.

SMTP has no delivery callbacks: the server accepting the message is the last thing we
learn, so the task succeeds there. Our ids travel in ``X-Comms-*`` headers (bounces that
come back by mail can be matched with them).
"""

from __future__ import annotations

import smtplib
from email.utils import make_msgid, parseaddr

from django.core.mail import EmailMultiAlternatives, get_connection
from django.core.mail.backends.base import BaseEmailBackend

from agents.email.providers.base import EmailProvider, FallbackError, OutgoingEmail
from orchestrator.errors import AgentError, PermanentError


class SmtpProvider(EmailProvider):
    name = "smtp"
    awaits_events = False
    # One SMTP session per batch: servers limit the sessions of one client, and an SMTP
    # session is sequential anyway.
    concurrent_sends = False

    def connection(self) -> BaseEmailBackend:
        return get_connection("django.core.mail.backends.smtp.EmailBackend", fail_silently=False)

    def headers(self, message: OutgoingEmail) -> dict[str, str]:
        domain = parseaddr(message.from_email)[1].rpartition("@")[2] or "localhost"
        return {
            "Message-ID": make_msgid(domain=domain),
            "X-Comms-Task-Id": message.task_id,
            "X-Comms-Email-Id": str(message.email_id),
        }

    def message_id(self, email: EmailMultiAlternatives) -> str:
        return email.extra_headers["Message-ID"]

    def error_for(self, exc: Exception) -> AgentError | None:
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            codes = sorted({code for code, _ in exc.recipients.values()})
            if codes and all(400 <= c < 500 for c in codes):
                return FallbackError(f"SMTP server deferred the recipient ({codes})", code="smtp_deferred")
            return PermanentError(f"SMTP server refused the recipient ({codes})", code="smtp_rejected")
        if isinstance(exc, smtplib.SMTPResponseException):
            text = f"SMTP {exc.smtp_code}: {_text(exc.smtp_error)}"
            if 400 <= exc.smtp_code < 500 or isinstance(exc, smtplib.SMTPAuthenticationError):
                return FallbackError(text, code="smtp_unavailable")
            return PermanentError(text, code="smtp_rejected")
        if isinstance(exc, TimeoutError | smtplib.SMTPException | OSError):
            return FallbackError(f"SMTP server unreachable: {type(exc).__name__}", code="smtp_unavailable")
        return None


def _text(value: bytes | str) -> str:
    return (value.decode(errors="replace") if isinstance(value, bytes) else str(value))[:300]
