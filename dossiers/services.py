"""Dossier services: contacts, consent and artifacts. Keyword-only, typed, atomic."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import phonenumbers
import structlog
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from comms_platform import events
from comms_platform.pgbackend.rows import fetch_one, insert_row
from dossiers.models import Artifact, AuditLog, Consent, ConsentChange, ConsentStatus, Contact

log = structlog.get_logger(__name__)


class InvalidPhoneNumber(ValueError):
    """Our own message (never the library's), the same on every endpoint; ``code`` is the API's
    error code for it."""

    code = "invalid_phone_number"

    def __init__(self, raw: str) -> None:
        super().__init__(
            f"{str(raw)[:40]!r} is not a phone number: write it in international form with the country code, "
            "such as +14155550123."
        )


def normalize_phone(raw: str, *, region: str | None = None) -> str:
    """E.164 for a phone number in national or international form; raises InvalidPhoneNumber."""
    value = (raw or "").strip()
    if value.startswith("whatsapp:"):
        value = value.removeprefix("whatsapp:")
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        raise InvalidPhoneNumber(raw) from None
    if not phonenumbers.is_valid_number(number):
        raise InvalidPhoneNumber(raw)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def contact_get_or_create_by_phone(
    *, phone: str, defaults: dict[str, Any] | None = None
) -> tuple[Contact, bool]:
    """Find the contact with this E.164 number, or create it (safe under concurrency).

    The messaging agent's path for every send to a number: one prepared SELECT, and one
    INSERT for a new number (a savepoint only inside a caller's transaction)."""
    existing = fetch_one(Contact, phone, by="phone")  # unique when set
    if existing is not None:
        return existing, False
    contact = Contact(phone=phone, **(defaults or {}))
    try:
        if transaction.get_connection().in_atomic_block:
            with transaction.atomic():
                insert_row(contact)
        else:
            insert_row(contact)  # autocommit: a failed INSERT leaves nothing to roll back
        return contact, True
    except IntegrityError:  # a concurrent request created it, or the email belongs to another contact
        existing = Contact.objects.filter(phone=phone).order_by("created_at").first()
        if existing is not None:
            return existing, False
        if not (defaults or {}).get("email"):
            raise
        # The email is another contact's (unique): this number becomes a contact without it.
        rest = {k: v for k, v in defaults.items() if k != "email"}
        return contact_get_or_create_by_phone(phone=phone, defaults=rest)


def contact_get_or_create(
    *,
    phone: str = "",
    email: str = "",
    name: str = "",
    whatsapp: str = "",
    locale: str = "",
    timezone_name: str = "",
    synthetic: bool = False,
) -> tuple[Contact, bool]:
    """The contact with this phone or this email, or a new one. Returns (contact, created).

    ``phone`` must already be E.164 (``normalize_phone``). Contacts are unique by phone
    and by (case-insensitive) email; an existing match is returned unchanged, so creating
    a contact twice is safe. Concurrent creators race on the unique constraints and the
    losers read the winner's row.
    """
    email = email.strip().lower()
    existing = _contact_matching(phone, email)
    if existing is not None:
        return existing, False
    fields = {"phone": phone, "email": email, "name": name, "whatsapp": whatsapp, "synthetic": synthetic}
    if phone and not whatsapp:
        fields["whatsapp"] = f"whatsapp:{phone}"
    if locale:
        fields["locale"] = locale
    if timezone_name:
        fields["timezone"] = timezone_name
    try:
        with transaction.atomic():
            return Contact.objects.create(**fields), True
    except IntegrityError:
        existing = _contact_matching(phone, email)
        if existing is None:  # pragma: no cover - the constraint fired, so the row exists
            raise
        return existing, False


def _contact_matching(phone: str, email: str) -> Contact | None:
    match = Q(pk__in=[])
    if phone:
        match |= Q(phone=phone)
    if email:
        match |= Q(email__iexact=email)
    return Contact.objects.filter(match).order_by("created_at").first()


def audit_record(
    *, actor: str, action: str, object_type: str, object_id: Any, details: dict[str, Any] | None = None
) -> AuditLog:
    """Record an operator action on personal data. Pass ids and counts, never the data."""
    return AuditLog.objects.create(
        actor=str(actor)[:150],
        action=action,
        object_type=object_type,
        object_id=str(object_id),
        details=details or {},
    )


def consent_status(*, contact_id: Any, channel: str) -> str:
    status = (
        Consent.objects.filter(contact_id=contact_id, channel=channel)
        .values_list("status", flat=True)
        .first()
    )
    return status or ConsentStatus.UNKNOWN


def consent_set(
    *, contact_id: Any, channel: str, status: str, source: str, detail: str = "", actor: str = ""
) -> bool:
    """Record a consent change (with its history row). Returns False when nothing changed."""
    now = timezone.now()
    with transaction.atomic():
        consent, created = Consent.objects.select_for_update().get_or_create(
            contact_id=contact_id,
            channel=channel,
            defaults={"status": status, "changed_at": now, "source": source},
        )
        if not created and consent.status == status:
            return False
        if not created:
            consent.status, consent.changed_at, consent.source = status, now, source
            consent.save(update_fields=["status", "changed_at", "source"])
        ConsentChange.objects.create(
            contact_id=contact_id,
            channel=channel,
            status=status,
            source=source,
            detail=detail[:200],
            actor=actor,
        )
        if status == ConsentStatus.OPTED_OUT:
            events.publish(
                "contact.opted_out", {"contact_id": str(contact_id), "channel": channel, "source": source}
            )
    return True


def artifact_store(
    *,
    content: bytes,
    content_type: str,
    kind: str,
    contact_id: Any = None,
    task_id: Any = None,
    correlation_id: str = "",
    source_url: str = "",
) -> Artifact:
    """Save a blob to Django's storage and record it; rows and logs refer to it by id."""
    artifact_id = uuid.uuid4()
    now = timezone.now()
    key = default_storage.save(f"artifacts/{now:%Y/%m}/{artifact_id}", ContentFile(content))
    log.info("artifact.stored", artifact_id=str(artifact_id), kind=kind, size=len(content), task_id=task_id)
    return Artifact.objects.create(
        id=artifact_id,
        contact_id=contact_id,
        task_id=task_id,
        correlation_id=correlation_id,
        kind=kind,
        storage_key=key,
        content_type=content_type,
        size=len(content),
        sha256=hashlib.sha256(content).hexdigest(),
        source_url=source_url,
        occurred_at=now,
    )


def artifact_delete(*, artifact: Artifact) -> None:
    """Delete the blob, then the row (a missing blob is not an error: it is gone either way)."""
    default_storage.delete(artifact.storage_key)
    artifact.delete()


def artifact_signed_url(*, artifact_id: Any) -> str:
    """A download URL that expires after ARTIFACT_URL_TTL_SECONDS (``dossiers.links``: every
    store, S3 included, is served through the one sandboxed view)."""
    from dossiers.links import artifact_url

    return artifact_url(artifact_id=artifact_id)
