"""Messaging providers: ``twilio`` in production, ``simulated`` in test mode, ``gateway`` (a
generic HTTP SMS gateway) when ``MESSAGING_PROVIDER=gateway``."""

from __future__ import annotations

from django.conf import settings

from agents.messaging.providers.base import MessagingProvider


def get_provider() -> MessagingProvider:
    if settings.MESSAGING_PROVIDER == "gateway":
        from agents.messaging.providers.gateway import GatewayProvider

        return GatewayProvider()
    if settings.TEST_MODE and not settings.TWILIO_API_BASE_URL:
        from agents.messaging.providers.simulated import SimulatedProvider

        return SimulatedProvider()
    from agents.messaging.providers.twilio import TwilioProvider

    return TwilioProvider()
