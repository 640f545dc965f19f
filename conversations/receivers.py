"""Feeds conversations from the dossier's ``interaction_recorded`` signal (after commit)."""

from __future__ import annotations

from typing import Any

from django.dispatch import receiver

from dossiers.signals import interaction_recorded

CHANNELS = {"sms", "whatsapp", "email", "voice"}


@receiver(interaction_recorded, dispatch_uid="conversations.join")
def join_conversation(sender: Any, *, kind: str, object_id: Any, contact_id: Any, channel: str, direction: str,
                      task_id: Any, occurred_at: Any, contact_is_new: bool = False, **kwargs: Any) -> None:  # fmt: skip
    from conversations.services import conversation_record

    if channel not in CHANNELS:
        return
    if direction == "outbound" and contact_is_new:
        return  # a contact created by this very send has no conversation to join: no statement
    conversation_record(contact_id=contact_id, channel=channel, direction=direction, occurred_at=occurred_at,
                        task_id=task_id, kind=kind, object_id=object_id)  # fmt: skip
