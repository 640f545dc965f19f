"""SendGrid's v3 Mail Send API through the official ``sendgrid`` SDK.

https://www.twilio.com/docs/sendgrid/api-reference/mail-send/mail-send — a 202 answer
carries the message id in ``X-Message-Id``; SendGrid's events later carry it as the
prefix of ``sg_message_id`` and our ``custom_args`` at the top level of each event.
"""

from __future__ import annotations

import base64
import json
from email.utils import parseaddr
from urllib.error import URLError

import python_http_client
from django.conf import settings
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import (
    Attachment,
    Category,
    CustomArg,
    Disposition,
    FileContent,
    FileName,
    FileType,
    From,
    Header,
    Mail,
    ReplyTo,
    To,
)

from agents.common.errors import PermanentError, TransientError
from agents.email.providers import EmailProvider, FallbackError, OutgoingEmail, SendResult

DEFAULT_HOST = "https://api.sendgrid.com"


def build_mail(message: OutgoingEmail) -> Mail:
    """The Mail object; custom args and categories carry only our ids and task type."""
    from_name, from_addr = parseaddr(message.from_email)
    mail = Mail(
        from_email=From(from_addr, from_name or None),
        to_emails=To(message.to),
        subject=message.subject,
        plain_text_content=message.text,
        html_content=message.html,
    )
    if message.reply_to:
        mail.reply_to = ReplyTo(message.reply_to)
    if message.list_unsubscribe:
        mail.header = [
            Header("List-Unsubscribe", message.list_unsubscribe),
            Header("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
        ]
    mail.custom_arg = [CustomArg("task_id", message.task_id), CustomArg("email_id", str(message.email_id))]
    if message.categories:
        mail.category = [Category(c) for c in message.categories]
    if message.attachments:
        mail.attachment = [
            Attachment(
                FileContent(base64.b64encode(a.content).decode()),
                FileName(a.filename),
                FileType(a.content_type),
                Disposition("attachment"),
            )
            for a in message.attachments
        ]
    return mail


class SendGridProvider(EmailProvider):
    name = "sendgrid"

    def client(self) -> SendGridAPIClient:
        client = SendGridAPIClient(
            settings.SENDGRID_API_KEY, host=settings.SENDGRID_API_BASE_URL or DEFAULT_HOST
        )
        # python_http_client waits forever by default; a hung API must not hold a worker.
        client.client.timeout = settings.EMAIL_TIMEOUT
        return client

    def send(self, message: OutgoingEmail) -> SendResult:
        try:
            response = self.client().send(build_mail(message))
        except python_http_client.exceptions.HTTPError as exc:
            raise _classify(exc) from None
        except (TimeoutError, URLError, ConnectionError) as exc:
            raise FallbackError(
                f"SendGrid did not answer: {type(exc).__name__}", code="sendgrid_timeout"
            ) from None
        message_id = _header(response.headers, "X-Message-Id")
        if not message_id:
            raise PermanentError("SendGrid accepted the mail without an X-Message-Id", code="sendgrid_no_id")
        return SendResult(provider=self.name, message_id=message_id, awaits_events=True)


def _header(headers, name: str) -> str:
    return (headers.get(name) if headers is not None else None) or ""


def _classify(exc: python_http_client.exceptions.HTTPError) -> Exception:
    """SendGrid's status → our typed error (the body says why; it holds no secret)."""
    status = int(exc.status_code)
    reason = _error_text(exc.body)
    if status == 429:
        retry_after = _header(exc.headers, "Retry-After")
        return TransientError(
            f"SendGrid rate limit (429){reason}",
            code="sendgrid_rate_limited",
            retry_after=_seconds(retry_after),
        )
    if status in (401, 403):
        # A revoked or rotated key, or SendGrid's auth service down: the other provider can still send.
        return FallbackError(
            f"SendGrid refused our credentials (HTTP {status}){reason}", code="sendgrid_auth"
        )
    if status >= 500:
        return FallbackError(f"SendGrid failed (HTTP {status}){reason}", code="sendgrid_unavailable")
    return PermanentError(f"SendGrid refused the mail (HTTP {status}){reason}", code="sendgrid_rejected")


def _error_text(body: bytes | str | None) -> str:
    try:
        errors = json.loads(body or b"{}").get("errors") or []
    except (ValueError, AttributeError):
        return ""
    messages = [str(e.get("message", "")) for e in errors if isinstance(e, dict)]
    return f": {'; '.join(m for m in messages if m)[:300]}" if any(messages) else ""


def _seconds(value: str) -> float | None:
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        return None
