"""SendGrid's v3 Mail Send API through django-anymail's SendGrid backend.

https://www.twilio.com/docs/sendgrid/api-reference/mail-send/mail-send — a 202 answer
carries the message id in ``X-Message-Id``; SendGrid's events later carry it as the
prefix of ``sg_message_id`` and our ids (anymail ``metadata`` → ``custom_args``) at the
top level of each event. anymail builds the payload (``anymail.backends.sendgrid``); this
module only configures the backend from our settings and reads the answer.

anymail 13.0.1+ no longer tests SendGrid against the live service and warns
(``AnymailNotSupportedWarning``) on every use; ``agents.email.apps`` silences that one
warning: the wire format is pinned by tests/email/test_sendgrid_provider.py against
tests/fakes/sendgrid.py.
"""

from __future__ import annotations

import json

from anymail.exceptions import AnymailError, AnymailRequestsAPIError
from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.core.mail.backends.base import BaseEmailBackend

from agents.email.providers.base import EmailProvider, FallbackError
from orchestrator.errors import AgentError, PermanentError, TransientError

BACKEND = "anymail.backends.sendgrid.EmailBackend"
DEFAULT_HOST = "https://api.sendgrid.com"


class SendGridProvider(EmailProvider):
    name = "sendgrid"
    awaits_events = True

    def connection(self) -> BaseEmailBackend:
        return get_connection(
            BACKEND,
            fail_silently=False,
            api_key=settings.SENDGRID_API_KEY,
            api_url=f"{(settings.SENDGRID_API_BASE_URL or DEFAULT_HOST).rstrip('/')}/v3/",
            # Our own ids (metadata) identify the message in events: no extra anymail_id arg.
            generate_message_id=False,
            # requests waits forever without a timeout; a hung API must not hold a worker.
            timeout=settings.EMAIL_TIMEOUT,
        )

    def message_id(self, email: EmailMultiAlternatives) -> str:
        response = email.anymail_status.esp_response
        message_id = response.headers.get("X-Message-Id", "") if response is not None else ""
        if not message_id:
            raise PermanentError("SendGrid accepted the mail without an X-Message-Id", code="sendgrid_no_id")
        return message_id

    def error_for(self, exc: Exception) -> AgentError | None:
        """SendGrid's status → our typed error (the body says why; it holds no secret)."""
        if not isinstance(exc, AnymailError):
            return None
        response = getattr(exc, "response", None)
        if isinstance(exc, AnymailRequestsAPIError) and response is None:
            # No answer at all (anymail wraps requests' Timeout / ConnectionError).
            return FallbackError(f"SendGrid did not answer: {type(exc.__cause__ or exc).__name__}",
                                 code="sendgrid_timeout")  # fmt: skip
        if response is None:  # anymail refused the message before sending (serialisation…)
            return PermanentError(f"SendGrid message refused by anymail: {type(exc).__name__}",
                                  code="sendgrid_rejected")  # fmt: skip
        return _classify(response.status_code, _error_text(response.content), response.headers)


def _classify(status: int, reason: str, headers) -> AgentError:
    if status == 429:
        return TransientError(
            f"SendGrid rate limit (429){reason}",
            code="sendgrid_rate_limited",
            retry_after=_seconds(headers.get("Retry-After", "")),
        )
    if status in (401, 403):
        # A revoked or rotated key, or SendGrid's auth service down: the other provider can still send.
        return FallbackError(
            f"SendGrid refused our credentials (HTTP {status}){reason}", code="sendgrid_auth"
        )
    if status >= 500:
        return FallbackError(f"SendGrid failed (HTTP {status}){reason}", code="sendgrid_unavailable")
    return PermanentError(f"SendGrid refused the mail (HTTP {status}){reason}", code="sendgrid_rejected")


def _error_text(body: bytes | None) -> str:
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
