"""The cross-channel dossier: contacts, their consent, and everything said to and by them.

Every record points to a contact, the task that produced it (when there was one) and a
correlation id, and carries ``occurred_at`` for the timeline. Large content (recordings,
HTML bodies, generated documents) lives in ``Artifact`` blobs, referenced by id.
"""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q
from django.db.models.functions import Lower


class Contact(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200, blank=True)
    phone = models.CharField(max_length=20, blank=True, help_text="E.164, e.g. +14155550100")
    email = models.EmailField(blank=True)
    whatsapp = models.CharField(max_length=40, blank=True, help_text="whatsapp:+E164")
    locale = models.CharField(max_length=16, blank=True, default="en")
    timezone = models.CharField(max_length=64, blank=True, default="UTC")
    email_undeliverable = models.BooleanField(default=False, help_text="a hard bounce was seen")
    last_inbound_whatsapp_at = models.DateTimeField(
        null=True, blank=True, help_text="opens WhatsApp's 24-hour customer-service window"
    )
    # A plain FileField (content type checked on upload) rather than ImageField, which
    # would need Pillow; without an upload the API renders an initials avatar as SVG.
    avatar = models.FileField(upload_to="avatars/", blank=True)
    synthetic = models.BooleanField(
        default=False,
        help_text="a smoke-test contact (manage.py smoke): kept out of the inbound queue and the "
        "console's figures, erased by the retention job an hour after it was created",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        permissions = [("export_contact", "Export a contact's whole dossier")]
        indexes = [models.Index(fields=["phone"]), models.Index(fields=["email"])]
        constraints = [
            # Unique when set: contacts without a phone (or an email) are many.
            models.UniqueConstraint(fields=["phone"], condition=~Q(phone=""), name="contact_unique_phone"),
            models.UniqueConstraint(Lower("email"), condition=~Q(email=""), name="contact_unique_email_ci"),
        ]

    def __str__(self) -> str:
        return self.name or self.phone or self.email or str(self.id)


class ConsentChannel(models.TextChoices):
    SMS = "sms"
    WHATSAPP = "whatsapp"
    VOICE = "voice"
    EMAIL = "email"


class ConsentStatus(models.TextChoices):
    UNKNOWN = "unknown"
    OPTED_IN = "opted_in", "opted in"
    OPTED_OUT = "opted_out", "opted out"


class Consent(models.Model):
    """The current consent of a contact on one channel (history in ConsentChange)."""

    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="consents")
    channel = models.CharField(max_length=16, choices=ConsentChannel.choices)
    status = models.CharField(max_length=16, choices=ConsentStatus.choices, default=ConsentStatus.UNKNOWN)
    changed_at = models.DateTimeField()
    source = models.CharField(max_length=32, help_text="keyword, provider_error, api, operator, webhook…")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["contact", "channel"], name="consent_one_per_channel")]

    def __str__(self) -> str:
        return f"{self.channel}: {self.status}"


class ConsentChange(models.Model):
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="consent_changes")
    channel = models.CharField(max_length=16, choices=ConsentChannel.choices)
    status = models.CharField(max_length=16, choices=ConsentStatus.choices)
    source = models.CharField(max_length=32)
    detail = models.CharField(max_length=200, blank=True, help_text="the keyword, error code or reason")
    actor = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["contact", "-created_at"], name="consentchange_contact_idx")]

    def __str__(self) -> str:
        return f"{self.channel} → {self.status} ({self.source})"


class Direction(models.TextChoices):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


class Artifact(models.Model):
    """A blob in Django's storage, served through a signed, expiring URL."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    contact = models.ForeignKey(
        Contact, null=True, blank=True, on_delete=models.SET_NULL, related_name="artifacts"
    )
    task = models.ForeignKey(
        "orchestrator.Task", null=True, blank=True, on_delete=models.SET_NULL, related_name="artifacts"
    )
    correlation_id = models.CharField(max_length=128, blank=True, default="")
    kind = models.CharField(max_length=32, help_text="recording, transcript, html, text, media, document…")
    storage_key = models.CharField(max_length=500)
    content_type = models.CharField(max_length=100)
    size = models.PositiveBigIntegerField(default=0)
    sha256 = models.CharField(max_length=64, blank=True)
    source_url = models.URLField(max_length=1000, blank=True, help_text="where a provider's media came from")
    occurred_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            models.Index(fields=["contact", "-occurred_at"], name="artifact_contact_idx"),
            models.Index(fields=["correlation_id", "-occurred_at"], name="artifact_correlation_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.id}"


class Message(models.Model):
    """An SMS or WhatsApp message, either direction."""

    contact = models.ForeignKey(
        Contact, null=True, blank=True, on_delete=models.SET_NULL, related_name="messages"
    )
    task = models.ForeignKey(
        "orchestrator.Task", null=True, blank=True, on_delete=models.SET_NULL, related_name="messages"
    )
    correlation_id = models.CharField(max_length=128, blank=True, default="")
    channel = models.CharField(max_length=16, choices=[("sms", "SMS"), ("whatsapp", "WhatsApp")])
    direction = models.CharField(max_length=16, choices=Direction.choices)
    from_address = models.CharField(max_length=64)
    to_address = models.CharField(max_length=64)
    body = models.TextField(blank=True)
    media = models.JSONField(default=list, blank=True, help_text="[{url, content_type, artifact}]")
    provider_sid = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001 (unique when set)
    status = models.CharField(max_length=32, blank=True)
    error_code = models.CharField(max_length=16, blank=True)
    error_message = models.CharField(max_length=300, blank=True)
    segments = models.PositiveSmallIntegerField(default=1)
    encoding = models.CharField(max_length=8, blank=True, help_text="GSM-7 or UCS-2")
    occurred_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["provider_sid"], condition=Q(provider_sid__isnull=False), name="message_provider_sid"
            )
        ]
        indexes = [
            models.Index(fields=["contact", "-occurred_at"], name="message_contact_idx"),
            models.Index(fields=["correlation_id", "-occurred_at"], name="message_correlation_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.channel} {self.direction} {self.provider_sid or self.pk}"


class Call(models.Model):
    contact = models.ForeignKey(
        Contact, null=True, blank=True, on_delete=models.SET_NULL, related_name="calls"
    )
    task = models.ForeignKey(
        "orchestrator.Task", null=True, blank=True, on_delete=models.SET_NULL, related_name="calls"
    )
    correlation_id = models.CharField(max_length=128, blank=True, default="")
    direction = models.CharField(max_length=16, choices=Direction.choices, default=Direction.OUTBOUND)
    from_address = models.CharField(max_length=64)
    to_address = models.CharField(max_length=64)
    provider_sid = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001 (unique when set)
    status = models.CharField(max_length=32, blank=True)
    answered_by = models.CharField(max_length=32, blank=True)
    duration_seconds = models.PositiveIntegerField(null=True, blank=True)
    end_reason = models.CharField(max_length=200, blank=True)
    recording = models.ForeignKey(
        Artifact, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    occurred_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["provider_sid"], condition=Q(provider_sid__isnull=False), name="call_provider_sid"
            )
        ]
        indexes = [
            models.Index(fields=["contact", "-occurred_at"], name="call_contact_idx"),
            models.Index(fields=["correlation_id", "-occurred_at"], name="call_correlation_idx"),
        ]

    def __str__(self) -> str:
        return f"call {self.provider_sid or self.pk} ({self.status})"


class TranscriptTurn(models.Model):
    call = models.ForeignKey(Call, on_delete=models.CASCADE, related_name="turns")
    sequence = models.PositiveIntegerField()
    speaker = models.CharField(
        max_length=16, choices=[("caller", "caller"), ("agent", "agent"), ("system", "system")]
    )
    text = models.TextField()
    started_at = models.DateTimeField()
    interrupted = models.BooleanField(default=False)

    class Meta:
        ordering = ["call", "sequence"]
        constraints = [models.UniqueConstraint(fields=["call", "sequence"], name="turn_sequence_per_call")]

    def __str__(self) -> str:
        return f"{self.speaker}: {self.text[:60]}"


class Email(models.Model):
    contact = models.ForeignKey(
        Contact, null=True, blank=True, on_delete=models.SET_NULL, related_name="emails"
    )
    task = models.ForeignKey(
        "orchestrator.Task", null=True, blank=True, on_delete=models.SET_NULL, related_name="emails"
    )
    correlation_id = models.CharField(max_length=128, blank=True, default="")
    direction = models.CharField(max_length=16, choices=Direction.choices, default=Direction.OUTBOUND)
    from_address = models.CharField(max_length=254)
    to_address = models.CharField(max_length=254)
    subject = models.CharField(max_length=300, blank=True)
    text_body = models.TextField(blank=True)
    html = models.ForeignKey(Artifact, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    provider = models.CharField(max_length=16, blank=True, help_text="sendgrid or smtp: who delivered it")
    provider_message_id = models.CharField(max_length=200, blank=True, db_index=True)
    status = models.CharField(max_length=32, blank=True)
    occurred_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [
            models.Index(fields=["contact", "-occurred_at"], name="email_contact_idx"),
            models.Index(fields=["correlation_id", "-occurred_at"], name="email_correlation_idx"),
        ]

    def __str__(self) -> str:
        return f"email {self.subject!r} to {self.to_address}"


class EmailEvent(models.Model):
    email = models.ForeignKey(Email, on_delete=models.CASCADE, related_name="events")
    event = models.CharField(max_length=32)
    provider_event_id = models.CharField(max_length=200, unique=True)
    detail = models.JSONField(default=dict, blank=True)
    occurred_at = models.DateTimeField()

    class Meta:
        ordering = ["occurred_at"]

    def __str__(self) -> str:
        return f"{self.event} at {self.occurred_at:%Y-%m-%d %H:%M:%S}"


class AuditAction(models.TextChoices):
    VIEW_DOSSIER = "view_dossier", "viewed a dossier"
    VIEW_CONTACT = "view_contact", "viewed a contact"
    EXPORT = "export", "exported a dossier"
    ERASE = "erase", "erased a contact"
    CONSENT_CHANGE = "consent_change", "changed consent"
    RETENTION = "retention", "applied retention"
    OPERATOR_ACTION = "operator_action", "acted on a task (console)"
    DENIED = "denied", "was refused (403)"


class AuditLog(models.Model):
    """An operator action on personal data. ``details`` never holds the data itself:
    ids, counts and channel names only, so the audit trail survives an erasure."""

    actor = models.CharField(max_length=150, help_text="user name, api-key:<name> or a command")
    action = models.CharField(max_length=32, choices=AuditAction.choices)
    object_type = models.CharField(max_length=32, help_text="contact, correlation, …")
    object_id = models.CharField(max_length=128)
    details = models.JSONField(default=dict, blank=True)
    at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-at"]
        indexes = [models.Index(fields=["object_type", "object_id", "-at"], name="audit_object_idx")]

    def __str__(self) -> str:
        return f"{self.actor} {self.action} {self.object_type}:{self.object_id}"
