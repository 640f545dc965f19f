"""Messaging providers: ``twilio`` in production, ``simulated`` in test mode."""

from __future__ import annotations

from django.conf import settings

from agents.messaging.providers.base import MessagingProvider


def get_provider() -> MessagingProvider:
    if settings.TEST_MODE and not settings.TWILIO_API_BASE_URL:
        from agents.messaging.providers.simulated import SimulatedProvider

        return SimulatedProvider()
    from agents.messaging.providers.twilio import TwilioProvider

    return TwilioProvider()
