"""What the dossier tells other apps: an interaction (message, email, call) was recorded.

``interaction_recorded`` is sent after the transaction that wrote the row commits, with ids
and plain values only (never the body): the conversations app listens, the agents that write
dossier rows call ``interaction_recorded_notify`` and import nothing of their listeners.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import structlog
from django.db import transaction
from django.dispatch import Signal

log = structlog.get_logger(__name__)

# kwargs: kind ("message" | "email" | "call"), object_id, contact_id, channel, direction
# ("inbound" | "outbound"), task_id, occurred_at, contact_is_new (the writer created the
# contact a moment ago: nothing else of it can exist yet — a campaign's usual case)
interaction_recorded = Signal()


def interaction_recorded_notify(
    *,
    kind: str,
    object_id: Any,
    contact_id: Any,
    channel: str,
    direction: str,
    task_id: Any = None,
    occurred_at: datetime,
    contact_is_new: bool = False,
) -> None:
    """Send ``interaction_recorded`` once the caller's transaction commits (at once outside
    one). A failing receiver is logged and never fails the writer (a webhook, a send)."""
    kwargs = {"kind": kind, "object_id": object_id, "contact_id": contact_id, "channel": channel,
              "direction": direction, "task_id": task_id, "occurred_at": occurred_at,
              "contact_is_new": contact_is_new}  # fmt: skip

    def send() -> None:
        for receiver, result in interaction_recorded.send_robust(sender=kind, **kwargs):
            if isinstance(result, Exception):
                log.error("dossier.interaction_receiver_failed", receiver=getattr(receiver, "__name__", "?"),
                          error=type(result).__name__, kind=kind, object_id=str(object_id))  # fmt: skip

    transaction.on_commit(send)
