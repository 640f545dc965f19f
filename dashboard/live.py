"""Live updates of the inbound queue (group ``inbox``), sent after commit."""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

log = logging.getLogger(__name__)

INBOX_GROUP = "inbox"


def call_group(task_id: Any) -> str:
    """The voice agent pushes ``call.turn`` / ``call.status`` messages to this group."""
    return f"call.{task_id}"


def publish_inbox_update(task_id: Any, *, reason: str = "changed") -> None:
    """Tell every open inbound-queue page that a conversation arrived or changed.

    The messaging agent calls this when it stores an inbound message; the console calls
    it on claim, reply and resolve. A failure to publish is logged, never raised.
    """

    def send() -> None:
        layer = get_channel_layer()
        if layer is None:
            return
        try:
            async_to_sync(layer.group_send)(
                INBOX_GROUP, {"type": "inbox.update", "task_id": str(task_id), "reason": reason}
            )
        except Exception:
            log.warning("inbox update for task %s not sent", task_id, exc_info=True)

    transaction.on_commit(send)
