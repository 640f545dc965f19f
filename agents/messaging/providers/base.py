"""The provider interface of the messaging agent.

A provider sends one message and answers with Twilio's message SID and initial status,
or raises ``TransientError`` (429, 5xx, network: retry) / ``PermanentError`` (the same
request can never succeed). ``find_recent`` lets the agent reconcile after a worker died
between the provider's accept and our save.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class OutboundMessage:
    to: str  # whatsapp:+E164 or +E164
    body: str
    status_callback: str
    from_: str = ""
    messaging_service_sid: str = ""
    media_urls: list[str] = field(default_factory=list)
    content_sid: str = ""
    content_variables: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SendResult:
    sid: str
    status: str


class MessagingProvider(ABC):
    name: str = ""

    @abstractmethod
    def send(self, message: OutboundMessage) -> SendResult: ...

    @abstractmethod
    def find_recent(self, *, to: str, since: datetime, body: str) -> str | None:
        """The SID of a message to ``to`` with this body created since ``since``, if any."""

    @abstractmethod
    def fetch_status(self, sid: str) -> tuple[str, str]:
        """The message's current status and error code at the provider; ("not_found", "")
        when the provider has no such message. Raises TransientError when it cannot answer."""
