"""Conversations: one per contact and channel, the one model of inbox state.

Every inbound and outbound message of the thread joins it (``dossiers.signals``); the
inbound tasks it holds are finished when it is resolved. Operators' availability and
capacity drive round-robin assignment; SLA clocks flag conversations left unanswered.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class Status(models.TextChoices):
    OPEN = "open"
    PENDING = "pending"  # waiting for the customer
    SNOOZED = "snoozed"  # until snoozed_until, or the customer's next message
    RESOLVED = "resolved"


ACTIVE = (Status.OPEN, Status.PENDING, Status.SNOOZED)


class Label(models.Model):
    name = models.SlugField(max_length=50, unique=True)
    color = models.CharField(max_length=7, default="#6b7280", help_text="#rrggbb")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Conversation(models.Model):
    contact = models.ForeignKey("dossiers.Contact", on_delete=models.CASCADE, related_name="conversations")
    channel = models.CharField(
        max_length=16,
        choices=[("sms", "SMS"), ("whatsapp", "WhatsApp"), ("email", "Email"), ("voice", "Voice")],
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    snoozed_until = models.DateTimeField(null=True, blank=True)
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="assigned_conversations",
    )  # fmt: skip
    assigned_at = models.DateTimeField(null=True, blank=True)
    labels = models.ManyToManyField(Label, blank=True, related_name="conversations")
    unread = models.PositiveIntegerField(default=0, help_text="customer messages since an operator last read")
    first_customer_message_at = models.DateTimeField(null=True, blank=True)
    last_customer_message_at = models.DateTimeField(null=True, blank=True)
    last_reply_at = models.DateTimeField(null=True, blank=True)
    waiting_since = models.DateTimeField(
        null=True, blank=True, help_text="the customer's oldest unanswered message (the waiting clock)"
    )
    first_response_at = models.DateTimeField(null=True, blank=True)
    first_response_seconds = models.PositiveIntegerField(null=True, blank=True)
    sla_due_at = models.DateTimeField(null=True, blank=True, help_text="first or next response due")
    sla_breached = models.BooleanField(default=False, help_text="left unanswered past its SLA")
    resolved_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["waiting_since", "created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["contact", "channel"], name="conversation_one_per_contact_channel"
            )
        ]
        indexes = [
            models.Index(fields=["status", "assignee"], name="conversation_status_idx"),
            models.Index(
                fields=["sla_due_at"],
                condition=Q(sla_breached=False, sla_due_at__isnull=False),
                name="conversation_sla_due_idx",
            ),
            models.Index(
                fields=["snoozed_until"], condition=Q(status="snoozed"), name="conversation_snoozed_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.channel} conversation with {self.contact}"


class ConversationTask(models.Model):
    """An inbound task the conversation holds until it is resolved."""

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="held_tasks")
    task = models.OneToOneField(
        "orchestrator.Task", on_delete=models.CASCADE, related_name="conversation_hold"
    )
    finished = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.task_id} in {self.conversation_id}"


class ConversationEvent(models.Model):
    """What happened to a conversation: opened, assigned, replied, resolved, reopened, …"""

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=32)
    actor = models.CharField(max_length=150, blank=True)
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.kind} by {self.actor or 'system'}"


class PrivateNote(models.Model):
    """Between operators only: never sent to the customer (no task is ever made of it)."""

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="notes")
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    body = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return f"note by {self.author} on {self.conversation_id}"


class Operator(models.Model):
    """An operator's availability and capacity (auto-assignment, hand-offs)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="availability"
    )
    available = models.BooleanField(default=False, help_text="available (true) or away (false)")
    capacity = models.PositiveSmallIntegerField(default=5, help_text="active conversations at most")
    phone = models.CharField(max_length=20, blank=True, help_text="E.164: where voice hand-offs are dialled")
    last_assigned_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.user} ({'available' if self.available else 'away'}, {self.capacity})"
