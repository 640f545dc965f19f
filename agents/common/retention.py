"""The agent kit's purge hook (``comms_platform.purge``): raw webhook events under the one
retention and erasure policy of ``dossiers.retention``."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from agents.common.models import WebhookEvent
from comms_platform import purge


def expired(cutoff: purge.Cutoff) -> dict[str, QuerySet]:
    return {"webhook_events": WebhookEvent.objects.filter(received_at__lt=cutoff("webhook_events"))}


def mentioning(contact: Any, identifiers: list[str]) -> dict[str, QuerySet]:
    """The raw events that mention the contact's phone, WhatsApp address or email."""
    return {"webhook_events": WebhookEvent.objects.filter(purge.mentions(identifiers))}


def erase(contact: Any, identifiers: list[str], actor: str) -> dict[str, int]:
    return {kind: qs.delete()[0] for kind, qs in mentioning(contact, identifiers).items()}


HOOK = purge.PurgeHook(app="agents_common", expired=expired, mentioning=mentioning, erase=erase)
