"""Voice providers: start an outbound call, return the provider's call SID.

Production uses Twilio's Calls API (``twilio.py``); ``COMMS_MODE=test`` uses the simulated
provider (``simulated.py``), which plays the callee against our own endpoints.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from django.conf import settings


@dataclass(frozen=True)
class OutboundCall:
    task_id: Any
    to: str
    from_: str
    twiml_url: str
    status_callback: str
    recording_callback: str
    record: bool = False
    machine_detection: str = ""  # "", "Enable" or "DetectMessageEnd"
    time_limit: int | None = None
    gather_url: str = ""  # the simulated callee's fallback when no websocket server is reachable


class VoiceProvider(Protocol):
    name: str

    def start_call(self, call: OutboundCall) -> str: ...

    def hang_up(self, call_sid: str) -> None:
        """End a call in progress (Twilio: update the call to ``completed``)."""

    def fetch_call(self, sid: str) -> tuple[str, int | None]:
        """The call's status and duration at the provider; ("not_found", None) when unknown."""
        ...


def get_provider() -> VoiceProvider:
    if settings.TEST_MODE:
        from agents.voice.providers.simulated import SimulatedVoiceProvider

        return SimulatedVoiceProvider()
    from agents.voice.providers.twilio import TwilioVoiceProvider

    return TwilioVoiceProvider()
