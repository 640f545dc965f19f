"""Outbound event webhooks: the customer's endpoints, the deliveries (an outbox) and their attempts."""

from __future__ import annotations

import uuid

from django.db import models


class WebhookEndpoint(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    url = models.URLField(max_length=2000)
    description = models.CharField(max_length=200, blank=True, default="")
    event_types = models.JSONField(default=list, help_text="The event types sent here.")
    # The signing secret, encrypted at rest (event_webhooks/secrets.py); shown once at creation.
    secret_encrypted = models.TextField(editable=False)
    # During a rotation the previous secret signs too, until previous_secret_expires_at.
    previous_secret_encrypted = models.TextField(blank=True, default="", editable=False)
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    enabled = models.BooleanField(default=True)
    disabled_reason = models.CharField(max_length=200, blank=True, default="")
    # Set by the first failed attempt after a success; cleared by a success.
    failing_since = models.DateTimeField(null=True, blank=True)
    # Who may see what: the API client that created it (``key:<id>``, "" from the admin),
    # and whether it receives events of every task (admin-made, or a key with all_tasks).
    owner = models.CharField(max_length=64, blank=True, default="")
    all_events = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["owner", "-created_at"], name="whendpoint_owner_idx")]

    def __str__(self) -> str:
        return self.url


class CallbackSecret(models.Model):
    """An API key's secret for its tasks' one-off ``callback_url`` deliveries: made (and shown
    once) with the key, rotatable with an overlap like an endpoint's secret."""

    owner = models.CharField(max_length=64, unique=True, help_text="The API key, as ``key:<id>``.")
    secret_encrypted = models.TextField(editable=False)
    previous_secret_encrypted = models.TextField(blank=True, default="", editable=False)
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"callback secret of {self.owner}"


class EndpointEvent(models.Model):
    """What happened to an endpoint (created, rotated, disabled, enabled), shown in the admin."""

    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=32)
    detail = models.CharField(max_length=300, blank=True, default="")
    actor = models.CharField(max_length=150, blank=True, default="")
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-at"]

    def __str__(self) -> str:
        return f"{self.kind} {self.at:%Y-%m-%d %H:%M:%S}"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"  # waiting for its next attempt
    DELIVERED = "delivered"
    FAILED = "failed"  # a 4xx other than 429, or retries exhausted, or the endpoint disabled


class WebhookDelivery(models.Model):
    """One event for one endpoint (or one task's callback URL). Its ``webhook_id`` is the
    Standard Webhooks ``webhook-id``: the same on every attempt and every resend."""

    id = models.BigAutoField(primary_key=True)
    webhook_id = models.CharField(max_length=64, unique=True)
    # No database constraint: the bus may write a delivery for an endpoint another process
    # deleted a moment ago (its cached list); the attempt then finds no endpoint and stops.
    endpoint = models.ForeignKey(
        WebhookEndpoint,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="deliveries",
        db_constraint=False,
    )
    url = models.URLField(max_length=2000, help_text="Where it goes (a callback URL has no endpoint).")
    # A task's callback_url delivery: the API key (``key:<id>``) whose callback secret signs it.
    callback_owner = models.CharField(max_length=64, blank=True, default="")
    event_type = models.CharField(max_length=64)
    payload = models.JSONField()
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # While an attempt is in flight: another worker leaves it alone until then (a worker
    # killed mid-request leaves it, and the attempt is made again after it).
    locked_until = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "webhook deliveries"
        indexes = [
            models.Index(fields=["endpoint", "-created_at"], name="whdelivery_endpoint_idx"),
            models.Index(fields=["status", "next_attempt_at"], name="whdelivery_due_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} {self.webhook_id}"


class WebhookAttempt(models.Model):
    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log")
    at = models.DateTimeField(auto_now_add=True)
    request_headers = models.JSONField(default=dict)
    status_code = models.PositiveIntegerField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    response_body = models.TextField(blank=True, default="")
    error = models.CharField(max_length=300, blank=True, default="")

    class Meta:
        ordering = ["-at"]

    def __str__(self) -> str:
        return f"attempt {self.at:%Y-%m-%d %H:%M:%S} → {self.status_code or self.error}"
