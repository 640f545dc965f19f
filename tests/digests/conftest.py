"""Digests: a controlled clock, a contact, notify items and what the simulated Twilio received."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from agents.messaging.providers import simulated
from dossiers.models import Contact
from orchestrator import services
from orchestrator.models import RoutingRule, Task

T0 = datetime(2026, 7, 2, 16, 0, tzinfo=UTC)  # noon in New York: outside any quiet hours
PHONE = "+14155550147"


class Clock:
    """``django.utils.timezone.now`` for every caller (task ``created_at`` included)."""

    def __init__(self) -> None:
        self.now = T0

    def at(self, seconds: float) -> datetime:
        self.now = T0 + timedelta(seconds=seconds)
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(timezone, "now", lambda: c.now)
    return c


@pytest.fixture
def sms_route(settings) -> None:
    """notify → SMS only, through the messaging agent and the simulated Twilio (no callbacks:
    no server runs in process)."""
    settings.MESSAGING_SIMULATED_CALLBACKS = False
    RoutingRule.objects.all().delete()
    RoutingRule.objects.create(name="sms", task_types=["notify"], channels=["sms"])


@pytest.fixture
def ada(db) -> Contact:
    return Contact.objects.create(
        name="Ada", phone=PHONE, email="ada@example.com", timezone="America/New_York"
    )


def item(who: Contact, body: str, *, key: str = "order-updates", window: int = 600, **extra) -> Task:
    payload = {
        "body": body,
        "digest": {"key": key, "window_seconds": window, **extra.pop("digest", {})},
        **extra,
    }
    task, _ = services.task_create(
        type="notify", contact_id=who.id, payload=payload, correlation_id="order-7"
    )
    task.refresh_from_db()
    return task


def sent_to(number: str) -> list[str]:
    """Bodies the simulated Twilio accepted for ``number`` (this process)."""
    with simulated._sent_lock:
        return [body for _, to, body, _ in simulated._sent if to == number]


@pytest.fixture(autouse=True)
def _fresh_simulated_twilio():
    with simulated._sent_lock:
        simulated._sent.clear()
