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


class HandoffQueue(models.Model):
    """A caller waiting in a Twilio queue (``<Enqueue>``) for an operator to take the call from
    the console. The queue's SID arrives with Twilio's first wait-URL request; taking the call
    asks Twilio to dequeue this member (Queue Members API) — once: ``taken_by`` is claimed with
    a conditional UPDATE."""

    handoff_task = models.OneToOneField("orchestrator.Task", on_delete=models.CASCADE, related_name="+")
    call_task = models.ForeignKey("orchestrator.Task", on_delete=models.CASCADE, related_name="+")
    queue_name = models.CharField(max_length=64)
    queue_sid = models.CharField(max_length=34, blank=True)
    call_sid = models.CharField(max_length=34)
    taken_by = models.CharField(max_length=150, blank=True)
    taken_phone = models.CharField(
        max_length=20,
        blank=True,
        help_text="the taker's phone, which the bridge dials; empty: their Voice SDK client",
    )
    result = models.CharField(max_length=32, blank=True, help_text="Twilio's QueueResult, or taken")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.queue_name} ({self.result or 'waiting'})"
