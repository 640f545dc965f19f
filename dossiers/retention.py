"""Retention (what expired goes, blobs included) and erasure of one contact's personal data.

Both delete rather than keep redacted copies: an expired or erased record has no purpose
left, and a deleted row cannot leak. What survives is an ``AuditLog`` row with counts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from django.conf import settings
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from agents.common.models import WebhookEvent
from dossiers.models import Artifact, AuditAction, Call, Contact, Email, Message
from dossiers.services import audit_record
from orchestrator.models import Task, TaskEvent
from orchestrator.states import FINAL

log = structlog.get_logger(__name__)
BATCH = 1000


@dataclass
class RetentionReport:
    dry_run: bool
    counts: dict[str, int] = field(default_factory=dict)
    blobs: int = 0


def retention_apply(*, now: datetime | None = None, dry_run: bool = False) -> RetentionReport:
    """Delete every record older than its kind's period (settings.RETENTION_DAYS)."""
    now = now or timezone.now()
    days = settings.RETENTION_DAYS

    def cutoff(kind: str) -> datetime:
        return now - timedelta(days=days[kind])

    report = RetentionReport(dry_run=dry_run)
    recordings = Artifact.objects.filter(kind="recording", occurred_at__lt=cutoff("recordings"))
    others = Artifact.objects.exclude(kind="recording").filter(occurred_at__lt=cutoff("artifacts"))
    calls = Call.objects.filter(occurred_at__lt=cutoff("calls"))
    emails = Email.objects.filter(occurred_at__lt=cutoff("emails"))
    steps: list[tuple[str, QuerySet]] = [
        ("messages", Message.objects.filter(occurred_at__lt=cutoff("messages"))),
        # A deleted call or email takes its recording or HTML body with it.
        ("calls", calls),
        ("emails", emails),
        ("recordings", recordings),
        ("artifacts", others),
        ("webhook_events", WebhookEvent.objects.filter(received_at__lt=cutoff("webhook_events"))),
        ("tasks", Task.objects.filter(status__in=FINAL, finished_at__lt=cutoff("tasks"))),
    ]
    linked = Artifact.objects.filter(
        Q(id__in=calls.exclude(recording=None).values("recording_id"))
        | Q(id__in=emails.exclude(html=None).values("html_id"))
    )
    if dry_run:
        report.counts = {name: qs.count() for name, qs in steps}
        report.blobs = Artifact.objects.filter(
            Q(pk__in=recordings) | Q(pk__in=others) | Q(pk__in=linked)
        ).count()
        return report
    report.blobs += _delete_artifacts(linked)
    for name, qs in steps:
        if name in ("recordings", "artifacts"):
            count = _delete_artifacts(qs)
            report.blobs += count
        else:
            count = _delete_in_batches(qs)
        report.counts[name] = count
    log.info("retention.applied", status="done", **report.counts, blobs=report.blobs)
    if any(report.counts.values()):
        audit_record(actor="retention", action=AuditAction.RETENTION, object_type="dossier", object_id="*",
                     details={**report.counts, "blobs": report.blobs})  # fmt: skip
    return report


def _delete_in_batches(qs: QuerySet) -> int:
    total = 0
    while True:
        ids = list(qs.values_list("pk", flat=True)[:BATCH])
        if not ids:
            return total
        qs.model.objects.filter(pk__in=ids).delete()
        total += len(ids)


def _delete_artifacts(qs: QuerySet) -> int:
    """Delete rows, then their blobs once the rows are gone (a blob without a row is
    harmless and retried never; a row without its blob would be a broken link)."""
    total = 0
    while True:
        rows = list(qs.values_list("pk", "storage_key")[:BATCH])
        if not rows:
            return total
        Artifact.objects.filter(pk__in=[pk for pk, _ in rows]).delete()
        for _, key in rows:
            default_storage.delete(key)
        total += len(rows)


# --- Erasure ------------------------------------------------------------------------------


@dataclass
class ErasureReport:
    contact_id: str
    counts: dict[str, int] = field(default_factory=dict)


def contact_forget(*, contact_id: Any, actor: str) -> ErasureReport:
    """Erase a contact's personal data everywhere it is kept.

    Deletes the contact with its consent history, messages, calls (and transcripts),
    emails (and their events), artifacts and blobs; deletes the raw webhook events that
    mention the contact's phone, WhatsApp address or email; blanks the payload, result and
    error of every task of the contact or mentioning them (the task rows stay, for the
    operational history, without personal data). Leaves one audit row with counts only.
    """
    contact = Contact.objects.get(pk=contact_id)
    identifiers = _identifiers(contact)
    mentions = Q(pk__in=[])
    for value in identifiers:
        mentions |= Q(payload__icontains=value)
    report = ErasureReport(contact_id=str(contact.pk))
    blobs: list[str] = []
    with transaction.atomic():
        addressed = Q(contact=contact) | Q(from_address__in=identifiers) | Q(to_address__in=identifiers)
        whatsapp = [f"whatsapp:{v}" for v in identifiers]
        addressed |= Q(from_address__in=whatsapp) | Q(to_address__in=whatsapp)
        calls = Call.objects.filter(addressed)
        emails = Email.objects.filter(addressed)
        artifacts = Artifact.objects.filter(
            Q(contact=contact)
            | Q(id__in=calls.exclude(recording=None).values("recording_id"))
            | Q(id__in=emails.exclude(html=None).values("html_id"))
        )
        blobs = list(artifacts.values_list("storage_key", flat=True))
        report.counts["messages"] = Message.objects.filter(addressed).count()
        Message.objects.filter(addressed).delete()
        report.counts["calls"] = calls.count()
        calls.delete()
        report.counts["emails"] = emails.count()
        emails.delete()
        report.counts["artifacts"] = Artifact.objects.filter(storage_key__in=blobs).delete()[0]
        report.counts["webhook_events"] = WebhookEvent.objects.filter(mentions).delete()[0]
        tasks = Task.objects.filter(Q(contact=contact) | mentions)
        task_ids = list(tasks.values_list("id", flat=True))
        report.counts["tasks_scrubbed"] = Task.objects.filter(id__in=task_ids).update(
            payload={"erased": True}, result={}, error_message="", contact=None
        )
        TaskEvent.objects.filter(task_id__in=task_ids).update(details={})
        if contact.avatar:
            blobs.append(contact.avatar.name)
        contact.delete()
        audit_record(actor=actor, action=AuditAction.ERASE, object_type="contact", object_id=report.contact_id,
                     details=report.counts)  # fmt: skip
    for key in blobs:  # after the commit: a rolled-back erasure keeps its blobs
        default_storage.delete(key)
    report.counts["blobs"] = len(blobs)
    log.info("contact.forgotten", status="done", contact_id=report.contact_id, **report.counts)
    return report


def _identifiers(contact: Contact) -> list[str]:
    """How the contact's identity appears in raw payloads: E.164, digits only, whatsapp:, email."""
    values = {contact.phone, contact.email, contact.whatsapp.removeprefix("whatsapp:")}
    if contact.phone:
        values.add(re.sub(r"\D", "", contact.phone))
        values.add(contact.phone.replace("+", "%2B"))  # form-encoded callbacks
    return sorted(v for v in values if v and len(v) >= 6)
