"""The provider interface of the voice agent.

A provider starts one outbound call and answers with the provider's call SID, or raises
``TransientError`` (429, 5xx, network: retry) / ``PermanentError`` (the same request can
never succeed). ``dequeue`` puts a caller waiting in a queue through (the console's
*Take call*); ``hang_up`` ends a call in progress (the console's Hang up); ``fetch_call``
lets the kit's status check ask for a call whose final callback was lost.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any


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


class VoiceProvider(ABC):
    name: str = ""

    @abstractmethod
    def start_call(self, call: OutboundCall) -> str: ...

    @abstractmethod
    def hang_up(self, call_sid: str) -> None:
        """End a call in progress (Twilio: update the call to ``completed``)."""

    @abstractmethod
    def dequeue(self, *, queue_sid: str, call_sid: str, url: str) -> None:
        """Take a waiting caller out of a queue: their call goes on with the TwiML at ``url``
        (Twilio: the Queue Members API, ``POST /Queues/<QU>/Members/<CA>.json`` with ``Url``)."""

    @abstractmethod
    def fetch_call(self, sid: str) -> tuple[str, int | None]:
        """The call's status and duration at the provider; ("not_found", None) when unknown."""
