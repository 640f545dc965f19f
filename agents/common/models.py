from __future__ import annotations

from django.db import models


class WebhookEvent(models.Model):
    """Every provider callback we accepted, stored once under its dedupe key.

    A retried or duplicated callback hits the unique constraint and changes nothing.
    """

    provider = models.CharField(max_length=32)
    kind = models.CharField(max_length=32)
    dedupe_key = models.CharField(max_length=255)
    payload = models.JSONField(default=dict)
    received_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=64, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["provider", "dedupe_key"], name="webhookevent_dedupe"),
        ]
        indexes = [models.Index(fields=["received_at"], name="webhookevent_received_idx")]

    def __str__(self) -> str:
        return f"{self.provider}/{self.kind} {self.dedupe_key}"
