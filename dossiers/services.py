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
from django.db.models import Case, F, Q, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from comms_platform import events
from comms_platform.db import ValuePerRow, insert_one
from dossiers.models import (
    Artifact,
    AuditLog,
    Consent,
    ConsentChange,
    ConsentStatus,
    Contact,
    Direction,
    Email,
    Message,
)

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

    The messaging agent's path for every send to a number: one SELECT, and one INSERT for a
    new number (``insert_one``: no savepoint, a number taken meanwhile inserts nothing)."""
    # Unordered [:1], not .first(): the phone is unique when set; no ORDER BY to plan.
    existing = next(iter(Contact.objects.filter(phone=phone).order_by()[:1]), None)
    if existing is not None:
        return existing, False
    contact = Contact(phone=phone, **(defaults or {}))
    if insert_one(contact):
        return contact, True
    # A concurrent request created it, or the email belongs to another contact.
    existing = Contact.objects.filter(phone=phone).order_by("created_at").first()
    if existing is not None:
        return existing, False
    if not (defaults or {}).get("email"):
        raise IntegrityError(f"no contact could be created for {phone}")
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
    contact = Contact(**fields)
    if insert_one(contact):
        return contact, True
    existing = _contact_matching(phone, email)
    if existing is None:  # pragma: no cover - the constraint fired, so the row exists
        raise IntegrityError(f"no contact could be created for {phone or email}")
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


# --- Messages: every write of a Message row (the messaging agent calls these) -----------


def message_outbound_write(*, task_id: Any, retry: bool, **fields: Any) -> Message:
    """The task's outbound message: created on the first attempt, rewritten on a retry (the
    task's claim keeps one worker on it, so no lock is needed)."""
    message = Message.objects.filter(task_id=task_id, direction=Direction.OUTBOUND).first() if retry else None
    if message is None:
        return Message.objects.create(task_id=task_id, direction=Direction.OUTBOUND, **fields)
    for name, value in fields.items():
        setattr(message, name, value)
    message.save(update_fields=[*fields, "updated_at"])
    return message


def message_record_accepted(*, message_id: int, sid: str, status: str) -> None:
    """The provider accepted the message: its SID unless a callback put it there first, its
    status unless a callback already moved it on. One UPDATE: the plain one in the usual case (no
    callback yet), the conditional one when a callback came first."""
    now = timezone.now()
    plain = Message.objects.filter(id=message_id, provider_sid__isnull=True, status="pending")
    if plain.update(provider_sid=sid, status=status, updated_at=now):
        return
    Message.objects.filter(id=message_id).update(
        provider_sid=Coalesce(F("provider_sid"), Value(sid)),
        status=Case(When(status="pending", then=Value(status)), default=F("status")),
        updated_at=now,
    )


def message_record_refused(*, message_id: int, code: str, error: str) -> None:
    Message.objects.filter(id=message_id).update(
        status="failed", error_code=code[:16], error_message=error[:300], updated_at=timezone.now()
    )


def message_status_raise(
    *, message: Message, sid: str, status: str, rank: dict[str, int], code: str = "", reason: str = ""
) -> None:
    """Apply a provider's status to a message, never lowering it (``messages_status_raise``
    for one)."""
    messages_status_raise(changes=[(message, sid, status, code, reason)], rank=rank)


def messages_status_raise(*, changes: list[tuple[Message, str, str, str, str]], rank: dict[str, int]) -> int:
    """Apply providers' statuses to messages, never lowering one: ``changes`` holds
    ``(message, sid, status, code, reason)``, at most one per message; ``rank`` orders the
    statuses (a late ``sent`` after ``delivered`` changes nothing). Returns how many changed.

    Set-based: the messages are locked in id order and their current status read again (two
    batches applied at once must not let a lower status overwrite a higher one), then one UPDATE
    per distinct new state — a batch of 200 callbacks costs a handful of statements, not 200.
    The ``message.*`` events of the changed ones go out in one ``publish_many``."""
    if not changes:
        return 0
    now = timezone.now()
    by_id = {
        message.id: (message, sid, status, code, reason) for message, sid, status, code, reason in changes
    }
    current = dict(
        Message.objects.select_for_update().filter(id__in=by_id).order_by("id").values_list("id", "status")
    )
    groups: dict[tuple[str, str, str, bool], list[int]] = {}
    changed: list[tuple[Message, str, str]] = []
    for message_id, (message, sid, status, code, reason) in by_id.items():
        if message_id not in current:
            continue
        if not message.provider_sid and sid:
            Message.objects.filter(Q(provider_sid__isnull=True) | Q(provider_sid=""), id=message_id).update(
                provider_sid=sid, updated_at=now
            )
        level = rank.get(status, 0)
        if level <= rank.get(current[message_id], 0):
            continue
        clear = not code and level >= rank.get("partially_delivered", level + 1)
        groups.setdefault((status, code[:16], reason[:300] if code else "", clear), []).append(message_id)
        message.status = status
        changed.append((message, status, code))
    for (status, code, reason, clear), ids in groups.items():
        fields: dict[str, Any] = {"status": status}
        if code:
            fields.update(error_code=code, error_message=reason)
        elif clear:
            fields.update(error_code="", error_message="")  # delivered after all: no stale error
        Message.objects.filter(id__in=ids).update(**fields, updated_at=now)
    published = [
        events.Event(events.MESSAGE_EVENT[status], events.message_data(message, status) | ({"error_code": code} if code else {}),
                     task_id=str(message.task_id) if message.task_id else "")
        for message, status, code in changed
        if status in events.MESSAGE_EVENT
    ]  # fmt: skip
    events.publish_many(published)
    return len(changed)


def message_inbound_create(*, contact: Contact, **fields: Any) -> Message:
    return Message.objects.create(contact=contact, direction=Direction.INBOUND, **fields)


def message_attach_task(*, message_id: int, task_id: Any) -> None:
    Message.objects.filter(id=message_id).update(task_id=task_id)


def message_media_save(*, message_id: int, media: list, touch: bool = False) -> None:
    """Store the message's media list (download bookkeeping, artifact ids)."""
    fields: dict[str, Any] = {"media": media}
    if touch:
        fields["updated_at"] = timezone.now()
    Message.objects.filter(id=message_id).update(**fields)


def contact_note_whatsapp_inbound(*, contact_id: Any, phone: str, at: Any) -> None:
    """The contact wrote on WhatsApp (it opens the 24-hour window); keep the address."""
    Contact.objects.filter(id=contact_id).update(last_inbound_whatsapp_at=at, updated_at=at)
    Contact.objects.filter(id=contact_id, whatsapp="").update(whatsapp=f"whatsapp:{phone}")


# --- Messages in bulk: a broadcast batch's messages (the messaging agent calls these) --------


def messages_outbound_bulk_create(*, rows: list[dict[str, Any]]) -> list[int]:
    """Create outbound messages (status ``pending``) in one INSERT; their ids, in order."""
    now = timezone.now()
    created = Message.objects.bulk_create(
        [Message(direction=Direction.OUTBOUND, status="pending", occurred_at=now, **row) for row in rows]
    )
    return [message.id for message in created]


def messages_record_accepted_bulk(*, sids: dict[int, str], status: str) -> None:
    """The provider accepted these messages (message id → SID): one UPDATE. A callback that
    came first keeps its SID and its (higher) status."""
    if not sids:
        return
    with transaction.atomic():
        _lock_in_id_order(Message, list(sids))
        Message.objects.filter(id__in=list(sids)).update(
            provider_sid=Coalesce(F("provider_sid"), ValuePerRow(sids)),
            status=Case(When(status="pending", then=Value(status)), default=F("status")),
            updated_at=timezone.now(),
        )


def _lock_in_id_order(model: Any, ids: list[Any]) -> None:
    """Lock these rows in id order before a set-based UPDATE of them. The status callbacks'
    drain raises messages one by one in id order, in one transaction; an ``UPDATE … WHERE id IN``
    locks rows in the order it scans them (physical, not id order), and two transactions taking
    the same row locks in different orders deadlock (seen with a broadcast batch's write while
    the drain applied the first callbacks of that batch)."""
    list(model.objects.select_for_update().filter(id__in=ids).order_by("id").values_list("id", flat=True))


def messages_record_refused_bulk(*, refusals: dict[int, tuple[str, str]]) -> None:
    """The provider refused these messages (message id → (code, error)): one UPDATE per code."""
    by_code: dict[tuple[str, str], list[int]] = {}
    for message_id, (code, error) in refusals.items():
        by_code.setdefault((code[:16], error[:300]), []).append(message_id)
    if not by_code:
        return
    now = timezone.now()
    with transaction.atomic():
        _lock_in_id_order(Message, list(refusals))
        for (code, error), ids in by_code.items():
            Message.objects.filter(id__in=ids).update(
                status="failed", error_code=code, error_message=error, updated_at=now
            )


def messages_discard_unsent(*, ids: list[int]) -> None:
    """Delete prepared messages that never left (a paused or cancelled batch, a lost worker
    whose provider has no such message): the dossier keeps what was said, not what was not."""
    if ids:
        Message.objects.filter(id__in=ids, provider_sid__isnull=True, status="pending").delete()


# --- Emails in bulk: a broadcast batch's emails (the email agent calls these) ---------------


def emails_outbound_bulk_create(*, rows: list[dict[str, Any]]) -> list[int]:
    """Create outbound emails (status ``queued``) in one INSERT; their ids, in order."""
    now = timezone.now()
    created = Email.objects.bulk_create(
        [Email(direction=Direction.OUTBOUND, status="queued", occurred_at=now, **row) for row in rows]
    )
    return [email.id for email in created]


def emails_record_accepted_bulk(*, provider: str, message_ids: dict[int, str]) -> None:
    """The provider accepted these emails (email id → its message id): one UPDATE. Events that
    came first keep their (higher) status."""
    if not message_ids:
        return
    with transaction.atomic():
        _lock_in_id_order(Email, list(message_ids))  # the delivery events' drain touches them too
        Email.objects.filter(id__in=list(message_ids)).update(
            provider=provider,
            provider_message_id=Case(*[When(id=eid, then=Value(mid)) for eid, mid in message_ids.items()]),
            status=Case(When(status="queued", then=Value("sent")), default=F("status")),
            updated_at=timezone.now(),
        )


def emails_record_refused_bulk(*, ids: list[int]) -> None:
    """The provider refused these emails for good: one UPDATE."""
    if ids:
        Email.objects.filter(id__in=ids).update(status="failed", updated_at=timezone.now())


def emails_discard_unsent(*, ids: list[int]) -> None:
    """Delete prepared emails that never left (paused, cancelled, a transient refusal)."""
    if ids:
        Email.objects.filter(id__in=ids, provider_message_id="", status="queued").delete()
