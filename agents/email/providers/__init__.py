"""Email providers: ``sendgrid`` (django-anymail's SendGrid backend) and ``smtp`` (Django's SMTP
backend) in production, the configured one then its fallback; ``simulated`` in test mode. The
interface is ``base.py``."""

from __future__ import annotations

import importlib

from django.conf import settings

from agents.email.providers.base import (
    Attachment,
    EmailProvider,
    FallbackError,
    OutgoingEmail,
    SendResult,
    build_message,
)

__all__ = ["Attachment", "EmailProvider", "FallbackError", "OutgoingEmail", "SendResult", "build_message",
           "get_provider", "provider_chain"]  # fmt: skip


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
