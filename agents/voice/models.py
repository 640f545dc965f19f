"""The voice agent's own table: one ConversationRelay session per call."""

from __future__ import annotations

from django.db import models


class RelaySession(models.Model):
    """The ConversationRelay websocket a call opened. One per call (``task`` is unique), so a
    replayed handshake — even a correctly signed one, within its expiry — is refused."""

    task = models.OneToOneField("orchestrator.Task", on_delete=models.CASCADE, related_name="relay_session")
    nonce = models.CharField(max_length=64, unique=True)
    opened_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"relay session of {self.task_id}"
