"""Voice providers: ``twilio`` (Twilio's Calls API) in production, ``simulated`` in test mode
(it plays the callee against our own endpoints). The interface is ``base.py``."""

from __future__ import annotations

from django.conf import settings

from agents.voice.providers.base import OutboundCall, VoiceProvider

__all__ = ["OutboundCall", "VoiceProvider", "get_provider"]


def get_provider() -> VoiceProvider:
    if settings.TEST_MODE:
        from agents.voice.providers.simulated import SimulatedVoiceProvider

        return SimulatedVoiceProvider()
    from agents.voice.providers.twilio import TwilioVoiceProvider

    return TwilioVoiceProvider()
