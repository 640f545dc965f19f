"""The operator console's own data: its permissions and canned replies (inbox state is in
``conversations``)."""

from __future__ import annotations

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
