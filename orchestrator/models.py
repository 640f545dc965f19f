"""Tasks, their events, the agent registry and API clients.

Business logic lives in ``orchestrator.services``; these classes only hold data.
"""

from __future__ import annotations

import uuid

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from orchestrator.states import TaskStatus


class Channel(models.TextChoices):
    VOICE = "voice"
    SMS = "sms"
    WHATSAPP = "whatsapp"
    EMAIL = "email"
    CONTENT = "content"
    ANY = "any", "any (chosen by routing)"
    SYSTEM = "system"


class AgentKind(models.TextChoices):
    IN_PROCESS = "in_process", "in process (Celery task)"
    REMOTE = "remote", "remote (HTTP agent)"


class AgentRegistration(models.Model):
    """Which agent serves a task type. Seeded by a data migration; editable in the admin."""

    task_type = models.CharField(max_length=64, unique=True, help_text="e.g. sms.send")
    agent = models.CharField(max_length=64, help_text="agent name, e.g. messaging")
    channel = models.CharField(max_length=16, choices=Channel.choices)
    kind = models.CharField(max_length=16, choices=AgentKind.choices, default=AgentKind.IN_PROCESS)
    queue = models.CharField(max_length=64, help_text="Celery queue the work is sent to")
    handler = models.CharField(
        max_length=200, blank=True, help_text="dotted path of the handler (in-process agents)"
    )
    url = models.URLField(blank=True, help_text="endpoint of a remote agent")
    enabled = models.BooleanField(default=True)
    dispatch_only = models.BooleanField(
        default=False, help_text="the agent reports back itself (PATCH /api/tasks/<id>/)"
    )
    capabilities = models.JSONField(default=dict, blank=True)
    description = models.CharField(max_length=300, blank=True)
    last_heartbeat_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["task_type"]

    def __str__(self) -> str:
        return f"{self.task_type} → {self.agent}"

    def clean(self) -> None:
        # The signed task body goes to this URL: never to a private, loopback or link-local
        # address in production (checked again at each send, after DNS).
        from comms_platform import outbound

        if self.url:
            try:
                outbound.check_url(self.url)
            except outbound.OutboundRefused as exc:
                raise ValidationError({"url": f"This URL is refused: {exc}."}) from None


class ApiKeyRole(models.TextChoices):
    CLIENT = "client", "client (creates and reads tasks)"
    AGENT = "agent", "agent (reports progress of the tasks assigned to its agent)"


class ContactAccess(models.TextChoices):
    NONE = "none", "none"
    READ = "read", "read contacts, timelines, exports and artifacts"
    WRITE = "write", "read, and create contacts, change consent, upload avatars"


ALL_TYPES = "*"


class ApiKey(models.Model):
    """A revocable API key and what it may do. Only its SHA-256 digest is kept: keys are
    random, so a digest lookup is enough and no slow password hasher sits on the request path.

    Scopes (checked by ``orchestrator.api.permissions``): the task types it may create
    (``["*"]``: every type open to clients; internal types never), its access to contacts
    and dossiers, and whether it sees every client's tasks or only its own. An agent key is
    bound to a remote agent's registration and reads and reports only that agent's tasks.
    """

    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, help_text="first characters, to recognise a key")
    digest = models.CharField(max_length=64, unique=True, editable=False)
    role = models.CharField(max_length=16, choices=ApiKeyRole.choices, default=ApiKeyRole.CLIENT)
    task_types = models.JSONField(
        default=list,
        blank=True,
        help_text='task types this key may create, e.g. ["sms.send", "email.send"]; ["*"] for every '
        "type open to clients; empty: none",
    )
    contacts = models.CharField(
        max_length=8,
        choices=ContactAccess.choices,
        default=ContactAccess.NONE,
        help_text="access to contacts and dossiers",
    )
    all_tasks = models.BooleanField(
        default=False, help_text="sees and cancels every client's tasks, not only its own"
    )
    webhooks = models.BooleanField(
        default=False, help_text="manages its outbound webhook endpoints (/api/webhook-endpoints/)"
    )
    agent_registration = models.ForeignKey(
        AgentRegistration,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="api_keys",
        help_text="agent keys: the remote agent this key speaks for",
    )
    expires_at = models.DateTimeField(null=True, blank=True, help_text="empty: never expires")
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        types = self.task_types
        if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
            raise ValidationError({"task_types": 'A JSON list of task types, e.g. ["sms.send"], or ["*"].'})
        if self.role == ApiKeyRole.AGENT:
            reg = self.agent_registration
            if reg is None:
                raise ValidationError(
                    {"agent_registration": "An agent key is bound to its agent's registration."}
                )
            if reg.kind != AgentKind.REMOTE:
                raise ValidationError(
                    {
                        "agent_registration": "Only a remote agent reports through the API; in-process agents "
                        "(Celery tasks) need no key."
                    }
                )


class Task(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    type = models.CharField(max_length=64)
    channel = models.CharField(max_length=16, choices=Channel.choices)
    status = models.CharField(max_length=16, choices=TaskStatus.choices, default=TaskStatus.PENDING)
    contact = models.ForeignKey(
        "dossiers.Contact", null=True, blank=True, on_delete=models.SET_NULL, related_name="tasks"
    )
    correlation_id = models.CharField(max_length=128, blank=True, default="")
    payload = models.JSONField(default=dict, blank=True)
    priority = models.PositiveSmallIntegerField(default=5, help_text="0 (lowest) to 9 (highest)")
    scheduled_for = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    # Idempotency: the key is unique per client ("source"); the body's digest tells a
    # retry of the same request from a different request reusing the key.
    source = models.CharField(max_length=64, blank=True, default="")
    # NULL (not "") when absent, so the partial unique constraint ignores keyless tasks.
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    request_digest = models.CharField(max_length=64, blank=True, default="")
    # A one-off URL the client named at intake: this task's events are delivered there too
    # (event_webhooks, signed with the client's callback secret).
    callback_url = models.URLField(max_length=2000, blank=True, default="")
    agent = models.CharField(max_length=64, blank=True, default="")
    attempts = models.PositiveSmallIntegerField(default=0)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    provider_id = models.CharField(max_length=128, blank=True, default="")
    result = models.JSONField(default=dict, blank=True)
    error_code = models.CharField(max_length=64, blank=True, default="")
    error_message = models.TextField(blank=True, default="")
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["source", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="task_idempotency_key_per_source",
            )
        ]
        indexes = [
            models.Index(fields=["-created_at"], name="task_created_idx"),
            models.Index(fields=["status", "updated_at"], name="task_status_updated_idx"),
            models.Index(fields=["correlation_id", "-created_at"], name="task_correlation_idx"),
            models.Index(fields=["contact", "-created_at"], name="task_contact_idx"),
            models.Index(fields=["type", "-created_at"], name="task_type_idx"),
            models.Index(fields=["provider_id"], name="task_provider_idx"),
            # A client key lists only its own tasks (orchestrator.api.permissions.tasks_visible).
            models.Index(fields=["source", "-created_at"], name="task_source_idx"),
            # The few tasks with a one-off callback_url (the outbound webhooks ask whether any exists).
            models.Index(fields=["id"], condition=~Q(callback_url=""), name="task_callback_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.id} ({self.status})"


class TaskEvent(models.Model):
    """One transition (or a refused, stale one) of a task; written with the transition."""

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="events")
    from_status = models.CharField(max_length=16, choices=TaskStatus.choices)
    to_status = models.CharField(max_length=16, choices=TaskStatus.choices)
    applied = models.BooleanField(default=True, help_text="false for a stale (backwards) transition")
    actor = models.CharField(max_length=100, help_text="who caused it: api, worker, webhook, sweeper…")
    channel = models.CharField(max_length=16, blank=True, default="")
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["task", "created_at"], name="taskevent_task_idx")]

    def __str__(self) -> str:
        mark = "" if self.applied else " (stale, not applied)"
        return f"{self.from_status} → {self.to_status}{mark}"


ROUTABLE_CHANNELS = ("voice", "whatsapp", "sms", "email")


class RoutingRule(models.Model):
    """Which channels, in which order, a matching task is tried on. The first match wins."""

    name = models.CharField(max_length=100, unique=True)
    position = models.PositiveIntegerField(default=100, help_text="rules are tried in ascending order")
    enabled = models.BooleanField(default=True)
    task_types = models.JSONField(default=list, blank=True, help_text='e.g. ["notify"]; empty matches any')
    min_priority = models.PositiveSmallIntegerField(default=0)
    max_priority = models.PositiveSmallIntegerField(default=9)
    tags = models.JSONField(
        default=list, blank=True, help_text="match when the task's payload.tags has one of these"
    )
    locales = models.JSONField(
        default=list, blank=True, help_text='contact locale prefixes, e.g. ["fr", "en-GB"]'
    )
    channels = models.JSONField(default=list, help_text='channel order, e.g. ["whatsapp", "sms", "email"]')
    channel_timeout_seconds = models.PositiveIntegerField(
        default=900, help_text="a channel still undelivered after this long falls back to the next"
    )
    quiet_start = models.TimeField(null=True, blank=True, help_text="contact's local time; e.g. 21:00")
    quiet_end = models.TimeField(null=True, blank=True, help_text="contact's local time; e.g. 08:00")

    class Meta:
        ordering = ["position", "id"]

    def __str__(self) -> str:
        return f"{self.name}: {' → '.join(self.channels)}"

    def save(self, *args, **kwargs) -> None:
        self.full_clean()  # rules are validated on every save, from the admin or from code
        super().save(*args, **kwargs)

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        errors: dict[str, str] = {}
        channels = self.channels if isinstance(self.channels, list) else None
        if not channels:
            errors["channels"] = f"List at least one channel of: {', '.join(ROUTABLE_CHANNELS)}."
        elif unknown := [c for c in channels if c not in ROUTABLE_CHANNELS]:
            errors["channels"] = f"Unknown channel(s) {unknown}; use: {', '.join(ROUTABLE_CHANNELS)}."
        elif len(set(channels)) != len(channels):
            errors["channels"] = "A channel may appear only once."
        for field in ("task_types", "tags", "locales"):
            value = getattr(self, field)
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                errors[field] = "A JSON list of strings."
        if self.min_priority > self.max_priority or self.max_priority > 9:
            errors["max_priority"] = (
                "Priorities go from 0 to 9, and min_priority must not exceed max_priority."
            )
        if (self.quiet_start is None) != (self.quiet_end is None):
            errors["quiet_end"] = "Give both ends of the quiet hours, or neither."
        if errors:
            raise ValidationError(errors)


class DigestStatus(models.TextChoices):
    OPEN = "open"
    SENT = "sent"
    # Every item was cancelled (or its contact erased) before the window ended: nothing to send.
    EMPTY = "empty"
    # The digest's message could not be created (no enabled agent for ``notify``): every item
    # failed with the reason.
    FAILED = "failed"


class Digest(models.Model):
    """The ``notify`` tasks with one ``digest.key`` for one contact that arrived within one window.

    The first item opens it (``opens_at`` = that task's ``created_at``); items that arrive
    before ``closes_at`` join it; at ``closes_at`` it is flushed into one ``notify`` task
    (``task``). At most one digest per contact and key is open (a partial unique constraint):
    concurrent items agree on it. Written only by ``orchestrator.services.digests``.
    """

    contact = models.ForeignKey("dossiers.Contact", on_delete=models.CASCADE, related_name="digests")
    key = models.CharField(max_length=100)
    status = models.CharField(max_length=8, choices=DigestStatus.choices, default=DigestStatus.OPEN)
    opens_at = models.DateTimeField()
    closes_at = models.DateTimeField()
    item_count = models.PositiveIntegerField(default=0, help_text="items joined (at the flush: items sent)")
    # The window, templates and routing fields the first item brought (``digest`` of its payload).
    config = models.JSONField(default=dict, blank=True)
    task = models.OneToOneField(
        Task, null=True, blank=True, on_delete=models.SET_NULL, related_name="digest_sent",
        help_text="the notify task that carries the digest's one message",
    )  # fmt: skip
    flushed_at = models.DateTimeField(null=True, blank=True)
    flushed_by = models.CharField(
        max_length=32, blank=True, default="", help_text="eta, sweep, item, command, admin"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-opens_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["contact", "key"], condition=Q(status="open"), name="digest_one_open_per_contact_key"
            )
        ]
        indexes = [
            # The sweep's question: which open digests are due?
            models.Index(fields=["closes_at"], condition=Q(status="open"), name="digest_open_due_idx"),
            models.Index(fields=["contact", "key", "-opens_at"], name="digest_contact_key_idx"),
        ]

    def __str__(self) -> str:
        return f"digest {self.key} ({self.status}, {self.item_count} items)"


class DigestItem(models.Model):
    """One ``notify`` task collected into a digest. A task joins at most one digest (unique)."""

    digest = models.ForeignKey(Digest, on_delete=models.CASCADE, related_name="items")
    task = models.OneToOneField(Task, on_delete=models.CASCADE, related_name="digest_item")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"item {self.task_id} of digest {self.digest_id}"
