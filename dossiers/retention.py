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

from comms_platform import purge
from dossiers.models import (
    Artifact,
    AuditAction,
    AuditLog,
    Call,
    Consent,
    ConsentChange,
    Contact,
    Email,
    EmailEvent,
    Message,
    TranscriptTurn,
)
from dossiers.services import audit_record

log = structlog.get_logger(__name__)
BATCH = 1000
SMOKE_CONTACT_TTL = timedelta(hours=1)


@dataclass
class RetentionReport:
    dry_run: bool
    counts: dict[str, int] = field(default_factory=dict)
    blobs: int = 0


def retention_apply(*, now: datetime | None = None, dry_run: bool = False) -> RetentionReport:
    """Delete every record older than its kind's period (settings.RETENTION_DAYS): the
    dossiers' own here, every other app's through its purge hook (``comms_platform.purge``)."""
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
        *((kind, qs) for hook in purge.hooks() for kind, qs in hook.expired(cutoff).items()),
        ("audit_entries", AuditLog.objects.filter(at__lt=cutoff("audit"))),
    ]
    smoke = Contact.objects.filter(synthetic=True, created_at__lt=now - SMOKE_CONTACT_TTL)
    linked = Artifact.objects.filter(
        Q(id__in=calls.exclude(recording=None).values("recording_id"))
        | Q(id__in=emails.exclude(html=None).values("html_id"))
    )
    if dry_run:
        report.counts = {name: qs.count() for name, qs in steps}
        report.counts["smoke_contacts"] = smoke.count()
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
    # Smoke runs leave a marked contact; an interrupted run's is erased here like any other.
    report.counts["smoke_contacts"] = 0
    for contact_id in smoke.values_list("pk", flat=True):
        contact_forget(contact_id=contact_id, actor="retention (smoke contact)")
        report.counts["smoke_contacts"] += 1
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

# What erasure here cannot reach: said on the confirmation page and by --dry-run.
PROVIDER_KEEPS = (
    "Twilio keeps its own logs of these messages and calls (numbers, bodies, recordings): delete "
    "them in the Twilio Console or with its API (Messages, Calls, Recordings resources).",
    "SendGrid keeps email activity (addresses, subjects) for its own retention period (30 days "
    "on most plans); a suppression for this address stays until you remove it there.",
    "Log stores and database backups keep what they held until they age out on their own schedule.",
)


@dataclass
class ErasureReport:
    """What an erasure deletes (or, with ``dry_run``, would delete): rows by kind, files."""

    contact_id: str
    counts: dict[str, int] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    dry_run: bool = False
    provider_keeps: tuple[str, ...] = PROVIDER_KEEPS

    def lines(self) -> list[str]:
        """The same list for the admin's confirmation page and ``forget_contact --dry-run``."""
        verb = "would go" if self.dry_run else "gone"
        rows = [f"{kind.replace('_', ' ')}: {count} {verb}" for kind, count in self.counts.items()]
        files = [f"file {name} {verb}" for name in self.files]
        return [*rows, f"files: {len(self.files)} {verb}", *files]


@dataclass
class _Scope:
    contact: Contact
    identifiers: list[str]
    querysets: dict[str, QuerySet]
    files: list[str]


def _scope(contact: Contact) -> _Scope:
    """Every row and file that holds or points to the contact, found by the contact or by its
    phone, WhatsApp address or email (records written before the contact existed too)."""
    from django.contrib.admin.models import LogEntry
    from django.contrib.contenttypes.models import ContentType

    identifiers = _identifiers(contact)
    whatsapp = [f"whatsapp:{v}" for v in identifiers]
    addressed = (
        Q(contact=contact)
        | Q(from_address__in=identifiers)
        | Q(to_address__in=identifiers)
        | Q(from_address__in=whatsapp)
        | Q(to_address__in=whatsapp)
    )
    calls = Call.objects.filter(addressed)
    emails = Email.objects.filter(addressed)
    artifacts = Artifact.objects.filter(
        Q(contact=contact)
        | Q(id__in=calls.exclude(recording=None).values("recording_id"))
        | Q(id__in=emails.exclude(html=None).values("html_id"))
    )
    files = list(artifacts.values_list("storage_key", flat=True))
    if contact.avatar:
        files.append(contact.avatar.name)
    querysets = {
        "messages": Message.objects.filter(addressed),
        "calls": calls,
        "transcript_turns": TranscriptTurn.objects.filter(call__in=calls),
        "emails": emails,
        "email_events": EmailEvent.objects.filter(email__in=emails),
        "artifacts": artifacts,
        "consents": Consent.objects.filter(contact=contact),
        "consent_changes": ConsentChange.objects.filter(contact=contact),
        **{kind: qs for hook in purge.hooks() for kind, qs in hook.mentioning(contact, identifiers).items()},
        "admin_log_entries_scrubbed": LogEntry.objects.filter(
            content_type=ContentType.objects.get_for_model(Contact), object_id=str(contact.pk)
        ),
    }
    return _Scope(contact, identifiers, querysets, files)


def contact_forget(*, contact_id: Any, actor: str, dry_run: bool = False) -> ErasureReport:
    """Erase a contact's personal data everywhere it is kept; the one erasure path (the
    admin's Delete and ``manage.py forget_contact`` both come here).

    Deletes the contact with its consent history, messages, calls (and transcripts),
    emails (and their events), artifacts and blobs, avatar included; deletes the raw webhook
    events that mention the contact's phone, WhatsApp address or email; blanks the payload,
    result, error and idempotency key of every task of the contact or mentioning them, and
    their events' details (the task rows stay, for the operational history, without personal
    data); blanks the admin's change history of the contact. Leaves one audit row with counts
    only. ``dry_run`` counts the same rows and lists the same files, and changes nothing.
    """
    contact = Contact.objects.get(pk=contact_id)
    scope = _scope(contact)
    report = ErasureReport(contact_id=str(contact.pk), dry_run=dry_run, files=scope.files)
    q = scope.querysets
    if dry_run:
        report.counts = {"contact": 1, **{kind: qs.count() for kind, qs in q.items()}}
        return report
    with transaction.atomic():
        # Counted before the deletes: turns and events go with their calls and emails.
        counts = {
            "contact": 1,
            **{
                k: q[k].count()
                for k in (
                    "messages",
                    "calls",
                    "transcript_turns",
                    "emails",
                    "email_events",
                    "consents",
                    "consent_changes",
                )
            },
        }
        for kind in ("messages", "calls", "emails"):
            q[kind].delete()
        counts["artifacts"] = Artifact.objects.filter(storage_key__in=scope.files).delete()[0]
        for hook in purge.hooks():  # every other app's rows, before the contact goes
            counts.update(hook.erase(contact, scope.identifiers, actor))
        counts["admin_log_entries_scrubbed"] = q["admin_log_entries_scrubbed"].update(
            object_repr="(erased contact)", change_message=""
        )
        contact.delete()
        report.counts = counts
        audit_record(actor=actor, action=AuditAction.ERASE, object_type="contact", object_id=report.contact_id,
                     details={**counts, "files": len(scope.files)})  # fmt: skip
    for key in scope.files:  # after the commit: a rolled-back erasure keeps its blobs
        default_storage.delete(key)
    log.info(
        "contact.forgotten", status="done", contact_id=report.contact_id, files=len(scope.files), **counts
    )
    return report


def _identifiers(contact: Contact) -> list[str]:
    """How the contact's identity appears in raw payloads: E.164, digits only, whatsapp:, email."""
    values = {contact.phone, contact.email, contact.whatsapp.removeprefix("whatsapp:")}
    if contact.phone:
        values.add(re.sub(r"\D", "", contact.phone))
        values.add(contact.phone.replace("+", "%2B"))  # form-encoded callbacks
    if contact.email:
        values.add(contact.email.replace("@", "%40"))
    return sorted(v for v in values if v and len(v) >= 6)
