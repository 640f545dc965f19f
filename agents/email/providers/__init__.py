"""Email providers: one module per provider, each a subclass of ``EmailProvider``.

The agent's pipeline (``agents.email.services.email_send``) builds one ``OutgoingEmail``
and hands it to a provider; a provider only turns it into its wire format, sends it and
reads the answer. Errors are the agent's typed errors: ``PermanentError`` (never retried),
``TransientError`` (retried later), and ``FallbackError`` — a transient failure that the
fallback provider may be able to avoid (5xx, timeout, auth outage), unlike a 429.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from django.conf import settings

from agents.common.errors import TransientError


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


@dataclass(frozen=True)
class SendResult:
    provider: str
    message_id: str
    # True when the provider reports delivery later through webhooks (SendGrid); SMTP
    # has no callbacks, so the server's acceptance is the end of the story.
    awaits_events: bool


class FallbackError(TransientError):
    """A transient failure on which the fallback provider should be tried at once."""


class EmailProvider(ABC):
    name: str = ""

    @abstractmethod
    def send(self, message: OutgoingEmail) -> SendResult:
        """Hand the message to the provider; raise an AgentError subclass on failure."""


PROVIDERS = {
    "sendgrid": "agents.email.providers.sendgrid.SendGridProvider",
    "smtp": "agents.email.providers.smtp.SmtpProvider",
    "simulated": "agents.email.providers.simulated.SimulatedProvider",
}


def get_provider(name: str) -> EmailProvider:
    """The provider called ``name``; in test mode every name is served by the simulator."""
    if settings.EMAIL_SIMULATED:
        name = "simulated"
    module_name, _, cls = PROVIDERS[name].rpartition(".")
    return getattr(importlib.import_module(module_name), cls)()


def provider_chain() -> list[str]:
    """The configured provider, then its fallback when one is set and differs."""
    chain = [settings.EMAIL_PROVIDER]
    fallback = settings.EMAIL_FALLBACK_PROVIDER
    if fallback and fallback != settings.EMAIL_PROVIDER:
        chain.append(fallback)
    return chain
