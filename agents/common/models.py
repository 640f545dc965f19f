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
            # The key leads: a drain's "which of these 200 keys are stored" is 200 index
            # descents whatever the planner's statistics say (with the provider leading, stale
            # statistics let it read every entry of the provider and filter: O(table) a drain).
            models.UniqueConstraint(fields=["dedupe_key", "provider"], name="webhookevent_key"),
        ]
        indexes = [
            models.Index(fields=["received_at"], name="webhookevent_received_idx"),
            # The callbacks not applied yet (stored by the view while Redis was away): a drain
            # finds them in id order without reading the processed millions.
            models.Index(
                fields=["id"], condition=models.Q(processed_at__isnull=True), name="webhookevent_unprocessed"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.provider}/{self.kind} {self.dedupe_key}"
