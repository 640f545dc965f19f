"""Dossier services: contacts, consent and artifacts. Keyword-only, typed, atomic."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import phonenumbers
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.utils import timezone

from dossiers.models import Artifact, Consent, ConsentChange, ConsentStatus, Contact


class InvalidPhoneNumber(ValueError):
    pass


def normalize_phone(raw: str, *, region: str | None = None) -> str:
    """E.164 for a phone number in national or international form; raises InvalidPhoneNumber."""
    value = (raw or "").strip()
    if value.startswith("whatsapp:"):
        value = value.removeprefix("whatsapp:")
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhoneNumber(f"{raw!r} is not a phone number: {exc}") from None
    if not phonenumbers.is_valid_number(number):
        raise InvalidPhoneNumber(f"{raw!r} is not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def contact_get_or_create_by_phone(
    *, phone: str, defaults: dict[str, Any] | None = None
) -> tuple[Contact, bool]:
    """Find the contact with this E.164 number, or create it (safe under concurrency)."""
    existing = Contact.objects.filter(phone=phone).order_by("created_at").first()
    if existing is not None:
        return existing, False
    try:
        with transaction.atomic():
            return Contact.objects.create(phone=phone, **(defaults or {})), True
    except IntegrityError:  # pragma: no cover - only with a unique constraint on phone
        return Contact.objects.filter(phone=phone).order_by("created_at").first(), False


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
