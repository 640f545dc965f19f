"""A broadcast: one message to many recipients, sent in batches at each sender's rate.

The ``Recipient`` row is the unit of work (no orchestrator Task per recipient): it is claimed
in batches, marked ``sending`` with a lease BEFORE the provider is called, and finished with
set-based writes (docs/broadcasts.md, "Guarantees").
"""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q
from django.db.models.functions import Now


class Channel(models.TextChoices):
    SMS = "sms", "SMS"
    WHATSAPP = "whatsapp", "WhatsApp"
    EMAIL = "email", "email"
    NOTIFY = "notify", "notify (routing rules choose)"


class BroadcastStatus(models.TextChoices):
    # Before its recipients or its body exist: ``importing`` (the console's upload is inserted by
    # a Celery task), ``writing`` (the content agent writes the body from the prompt, in a task).
    IMPORTING = "importing"
    WRITING = "writing"
    DRAFT = "draft"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    PAUSED = "paused"
    CANCELLED = "cancelled"
    COMPLETED = "completed"
    FAILED = "failed"  # importing or writing failed: ``Broadcast.error`` says why


class RecipientStatus(models.TextChoices):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"
    SKIPPED = "skipped"
    OPTED_OUT = "opted_out", "opted out"
    CANCELLED = "cancelled"


# A recipient in one of these is done: nothing more is sent to it (``sent`` waits only for
# the provider's delivery callback, which may raise it to delivered or failed).
FINAL_RECIPIENT = frozenset(
    {
        RecipientStatus.SENT,
        RecipientStatus.DELIVERED,
        RecipientStatus.FAILED,
        RecipientStatus.SKIPPED,
        RecipientStatus.OPTED_OUT,
        RecipientStatus.CANCELLED,
    }
)


class Broadcast(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    channel = models.CharField(max_length=16, choices=Channel.choices)
    body = models.TextField(blank=True, help_text="text with {{ variable }} placeholders")
    template = models.CharField(max_length=100, blank=True, help_text="a messaging template's name")
    prompt = models.TextField(blank=True, help_text="the content agent wrote the body from it, once")
    subject = models.CharField(
        max_length=300, blank=True, help_text="email: with {{ variable }} placeholders"
    )
    html = models.TextField(blank=True, help_text="email: an HTML part with {{ variable }} placeholders")
    status = models.CharField(max_length=16, choices=BroadcastStatus.choices, default=BroadcastStatus.DRAFT)
    scheduled_for = models.DateTimeField(null=True, blank=True)
    rate_per_second = models.FloatField(
        null=True, blank=True, help_text="messages per second per sender (empty: unpaced)"
    )
    senders = models.JSONField(default=list, blank=True, help_text="From numbers, used round-robin")
    # Quiet hours on the recipient's wall clock (its contact's time zone): defer, never drop.
    quiet_start = models.TimeField(null=True, blank=True)
    quiet_end = models.TimeField(null=True, blank=True)
    source = models.CharField(max_length=150, blank=True, help_text="who asked: api key source or user")
    idempotency_key = models.CharField(max_length=255, blank=True)
    request_hash = models.CharField(max_length=64, blank=True, help_text="what the key was first used with")
    created_by = models.CharField(max_length=150, blank=True)
    # Back-off after a provider's 429 / 5xx (docs/broadcasts.md, "Back-off"): no batch is
    # claimed before ``backoff_until``; ``backoff_step`` counts the refused batches in a row.
    backoff_until = models.DateTimeField(null=True, blank=True)
    backoff_step = models.PositiveSmallIntegerField(default=0)
    total = models.PositiveIntegerField(default=0, help_text="recipients accepted")
    rejected = models.PositiveIntegerField(default=0, help_text="input rows refused at creation")
    error = models.TextField(blank=True, help_text="why the broadcast failed (importing or writing)")
    start_when_ready = models.BooleanField(
        default=True, help_text="once imported / written: start (or wait for the schedule); else a draft"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["source", "idempotency_key"],
                condition=~Q(idempotency_key=""),
                name="broadcast_idempotency",
            )
        ]
        indexes = [models.Index(fields=["status", "scheduled_for"], name="broadcast_status_idx")]

    def __str__(self) -> str:
        return f"{self.name} ({self.channel}, {self.status})"


class BroadcastUpload(models.Model):
    """The console's parsed CSV between the confirm and the import task (docs/broadcasts.md,
    "Console"): zlib-compressed JSON, not in the Celery message (100,000 rows are megabytes).

    Kept apart from ``Broadcast`` so that the engine's reads of the broadcast never carry it.
    The task inserts the recipients in one transaction and then empties ``data``; ``rejected``
    keeps the rows the service refused at import (line, address, reason), for the watch page."""

    broadcast = models.OneToOneField(
        Broadcast, on_delete=models.CASCADE, primary_key=True, related_name="upload"
    )
    data = models.BinaryField(help_text="zlib(JSON) of the recipients; emptied once imported")
    rows = models.PositiveIntegerField(default=0)
    rejected = models.JSONField(default=list, blank=True, help_text="rows refused at import (first 1,000)")
    created_at = models.DateTimeField(auto_now_add=True)
    imported_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"upload of {self.broadcast_id} ({self.rows} rows)"


class Recipient(models.Model):
    # No index of its own: the unique (broadcast, address) constraint's index leads with it,
    # and one index less is one less to maintain per row at a 100,000-row intake.
    broadcast = models.ForeignKey(
        Broadcast, on_delete=models.CASCADE, related_name="recipients", db_index=False
    )
    line = models.PositiveIntegerField(help_text="1-based row of the input (CSV line or list index)")
    address = models.CharField(max_length=254)
    channel = models.CharField(
        max_length=16, blank=True, default="", db_default="",
        help_text="notify: the channel routing chose (empty: the broadcast's)",
    )  # fmt: skip
    contact = models.ForeignKey(
        "dossiers.Contact", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    variables = models.JSONField(default=dict, blank=True)
    # The database defaults let intake insert only the columns it knows (RecipientIntake).
    status = models.CharField(
        max_length=16, choices=RecipientStatus.choices, default=RecipientStatus.PENDING,
        db_default=RecipientStatus.PENDING,
    )  # fmt: skip
    reason = models.CharField(
        max_length=200, blank=True, default="", db_default="", help_text="why skipped / failed"
    )
    sender = models.CharField(max_length=64, blank=True, default="", db_default="")
    provider_id = models.CharField(max_length=64, blank=True, default="", db_default="")
    not_before = models.DateTimeField(null=True, blank=True, help_text="deferred (quiet hours) until")
    lease_until = models.DateTimeField(null=True, blank=True, help_text="a sending batch owns it until")
    attempt_started_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True, db_default=Now())

    class Meta:
        ordering = ["broadcast", "line"]
        constraints = [
            models.UniqueConstraint(fields=["broadcast", "address"], name="recipient_unique_address"),
        ]
        indexes = [
            # The claim reads pending rows of one broadcast in id order.
            models.Index(fields=["broadcast", "id"], condition=Q(status="pending"), name="recipient_pending"),
            # The reconciler reads sending rows whose lease ran out.
            models.Index(fields=["lease_until"], condition=Q(status="sending"), name="recipient_sending"),
        ]

    def __str__(self) -> str:
        return f"{self.address} ({self.status})"


class RecipientIntake(models.Model):
    """Intake's narrow view of ``broadcasts_recipient``: the five columns a new recipient
    brings; the others take their database defaults (pending, empty, NULL, now).

    ``bulk_create`` prepares and binds every concrete field of every row, so 100,000
    recipients through ``Recipient`` cost 14 x 100,000 field preparations; through this model,
    5 x 100,000. Same table, same constraints (unique address per broadcast, foreign keys);
    unmanaged, so it adds no table and no permissions. Only ``broadcasts.services`` writes
    through it (docs/broadcasts.md, "Intake")."""

    broadcast_id = models.UUIDField()
    line = models.PositiveIntegerField()
    address = models.CharField(max_length=254)
    contact_id = models.UUIDField(null=True)
    variables = models.JSONField()

    class Meta:
        managed = False
        db_table = "broadcasts_recipient"
        default_permissions = ()

    def __str__(self) -> str:
        return f"{self.address} (intake)"
