"""The provider interface of the email agent: each provider (``sendgrid.py``, ``smtp.py``,
``simulated.py``) is a small class of hooks on ``EmailProvider`` — the django-anymail shape.

The agent's pipeline (``agents.email.sending.EmailPipeline``) builds one ``OutgoingEmail``
and hands it to a provider. ``EmailProvider.send`` is written once: build a Django
``EmailMultiAlternatives`` (``build_message``), send it through the provider's Django email
backend (``connection``: anymail's SendGrid backend, Django's SMTP backend), read the id
(``message_id``) and turn a failure into our typed errors (``error_for``). The pipeline,
not the provider, observes each call (``observe_provider_call``).

Errors are the agent's typed errors: ``PermanentError`` (never retried), ``TransientError``
(retried later), and ``FallbackError`` — a transient failure that the fallback provider
may be able to avoid (5xx, timeout, auth outage), unlike a 429.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from django.core.mail import EmailMultiAlternatives
from django.core.mail.backends.base import BaseEmailBackend

from orchestrator.errors import AgentError, TransientError


@dataclass(frozen=True)
class Attachment:
    filename: str
    content: bytes
    content_type: str


@dataclass(frozen=True)
class OutgoingEmail:
    """Everything a provider needs; ids are ours (never personal data) for custom args."""

    task_id: str
    email_id: int
    from_email: str
    to: str
    subject: str
    text: str
    html: str
    reply_to: str = ""
    list_unsubscribe: str = ""
    attachments: tuple[Attachment, ...] = field(default_factory=tuple)
    categories: tuple[str, ...] = field(default_factory=tuple)
    # The caller's reference (a broadcast recipient, ``b:<id>``): travels as custom args and
    # comes back on the provider's events.
    ref: str = ""


@dataclass(frozen=True)
class SendResult:
    provider: str
    message_id: str
    # True when the provider reports delivery later through webhooks (SendGrid); SMTP
    # has no callbacks, so the server's acceptance is the end of the story.
    awaits_events: bool


class FallbackError(TransientError):
    """A transient failure on which the fallback provider should be tried at once."""


def build_message(
    message: OutgoingEmail,
    *,
    connection: BaseEmailBackend | None = None,
    headers: dict[str, str] | None = None,
) -> EmailMultiAlternatives:
    """The Django message every provider sends. ``metadata`` and ``tags`` are django-anymail's
    attributes (SendGrid ``custom_args`` and ``categories``); Django's SMTP backend ignores them."""
    all_headers = dict(headers or {})
    if message.list_unsubscribe:
        all_headers["List-Unsubscribe"] = message.list_unsubscribe
        all_headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    email = EmailMultiAlternatives(
        subject=message.subject,
        body=message.text,
        from_email=message.from_email,
        to=[message.to],
        reply_to=[message.reply_to] if message.reply_to else None,
        headers=all_headers,
        connection=connection,
    )
    if message.html:
        email.attach_alternative(message.html, "text/html")
    for a in message.attachments:
        email.attach(a.filename, a.content, a.content_type)
    email.metadata = {"task_id": message.task_id, "email_id": str(message.email_id)}
    if message.ref:
        email.metadata["ref"] = message.ref
    email.tags = list(message.categories)
    return email


class EmailProvider(ABC):
    """A provider is its hooks; ``send`` is the same for all of them."""

    name: str = ""
    operation: str = "mail.send"  # the label of its calls in comms_provider_request_seconds
    awaits_events: bool = False
    # A broadcast batch may send over several connections at once (one per call under way).
    concurrent_sends: bool = True

    def send(self, message: OutgoingEmail) -> SendResult:
        """Hand the message to the provider; raise an AgentError subclass on failure."""
        result = self.send_one(message, connection=self.connection())
        self.deliver_events([(message, result.message_id)])
        return result

    def send_one(self, message: OutgoingEmail, *, connection: BaseEmailBackend) -> SendResult:
        """Send over ``connection`` (a batch opens one and sends all its messages over it)."""
        email = build_message(message, connection=connection, headers=self.headers(message))
        try:
            email.send()
        except Exception as exc:
            error = self.error_for(exc)
            if error is None:
                raise
            raise error from None
        return SendResult(
            provider=self.name, message_id=self.message_id(email), awaits_events=self.awaits_events
        )

    # --- hooks ---------------------------------------------------------------------------
    def deliver_events(self, sent: list[tuple[OutgoingEmail, str]]) -> None:  # noqa: B027 (optional hook)
        """After sending: the simulator posts the events SendGrid would (a no-op elsewhere)."""

    @abstractmethod
    def connection(self) -> BaseEmailBackend:
        """The Django email backend that talks to the provider."""

    def headers(self, message: OutgoingEmail) -> dict[str, str]:
        """Extra headers for this provider's copy of the message."""
        return {}

    @abstractmethod
    def message_id(self, email: EmailMultiAlternatives) -> str:
        """The provider's id of the message just sent (what its events will carry)."""

    @abstractmethod
    def error_for(self, exc: Exception) -> AgentError | None:
        """Our typed error for a failed send; None lets an unexpected exception propagate."""
