"""The operator console's own data: the inbound queue, canned replies, operator capacity."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Console(models.Model):
    """No table: the holder of the console's permissions (see dashboard/access.py)."""

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [
            ("use_console", "Use the console pages and their live updates"),
            ("work_inbox", "Claim, reply to and resolve inbound conversations"),
            ("operate_tasks", "Retry and cancel tasks, hang up calls"),
            ("supervise", "Supervise: see every operator's work, assign to others"),
            ("view_operations", "See the configuration report and run connectivity checks"),
        ]

    def __str__(self) -> str:
        return "console"


class InboxItem(models.Model):
    """An inbound conversation (one inbound task) as the operators work it.

    Created lazily the first time the queue sees the task; claiming is a conditional
    UPDATE on ``claimed_by IS NULL`` so two operators cannot both own it.
    """

    task = models.OneToOneField("orchestrator.Task", on_delete=models.CASCADE, related_name="inbox_item")
    claimed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="inboxitem_claims",
    )
    claimed_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    flagged = models.BooleanField(default=False, help_text="left unclaimed past INBOX_UNCLAIMED_FLAG_SECONDS")
    received_at = models.DateTimeField(help_text="when the inbound task was created")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["received_at"]
        indexes = [
            models.Index(
                fields=["received_at"], condition=models.Q(resolved_at__isnull=True), name="inbox_open_idx"
            )
        ]

    def __str__(self) -> str:
        return f"inbox {self.task_id}"


class CannedResponse(models.Model):
    title = models.CharField(max_length=100, unique=True)
    body = models.TextField()
    channel = models.CharField(
        max_length=16,
        blank=True,
        choices=[("", "any"), ("sms", "SMS"), ("whatsapp", "WhatsApp")],
        help_text="empty: offered on every channel",
    )

    class Meta:
        ordering = ["title"]

    def __str__(self) -> str:
        return self.title


class OperatorProfile(models.Model):
    """Per-operator settings for round-robin auto-assignment of inbound conversations."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="operator")
    online = models.BooleanField(default=False)
    capacity = models.PositiveSmallIntegerField(default=5, help_text="open conversations at most")
    last_assigned_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.user} ({'online' if self.online else 'offline'}, {self.capacity})"
