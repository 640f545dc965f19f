"""Live updates of the inbound queue (group ``inbox``), sent after commit."""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction

from orchestrator.live import send_group

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

    message = {"type": "inbox.update", "task_id": str(task_id), "reason": reason}
    transaction.on_commit(lambda: send_group(INBOX_GROUP, message))
