"""Small builders for dossier rows (named test people, explicit timestamps)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dossiers.models import Artifact, Call, Contact, Email, Message

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def alice(**extra) -> Contact:
    return Contact.objects.create(name="Alice Martin", phone="+14155550134", email="alice@example.com",
                                  whatsapp="whatsapp:+14155550134", **extra)  # fmt: skip


def bob(**extra) -> Contact:
    return Contact.objects.create(name="Bob Stone", phone="+442071838750", email="bob@example.org", **extra)


def message(
    contact, minutes, *, channel="sms", direction="outbound", body="hello", correlation_id="", task=None
):
    return Message.objects.create(
        contact=contact, channel=channel, direction=direction, from_address="+14155550100",
        to_address=contact.phone if contact else "", body=body, occurred_at=at(minutes),
        correlation_id=correlation_id, task=task, status="delivered",
    )  # fmt: skip


def call(contact, minutes, *, direction="outbound", correlation_id="", recording=None):
    return Call.objects.create(
        contact=contact, direction=direction, from_address="+14155550100", to_address=contact.phone,
        status="completed", duration_seconds=42, occurred_at=at(minutes), correlation_id=correlation_id,
        recording=recording,
    )  # fmt: skip


def email(contact, minutes, *, direction="outbound", correlation_id="", subject="Your order", html=None):
    return Email.objects.create(
        contact=contact, direction=direction, from_address="shop@example.net", to_address=contact.email,
        subject=subject, text_body=f"Dear {contact.name}", occurred_at=at(minutes), correlation_id=correlation_id,
        html=html,
    )  # fmt: skip


def artifact(contact, minutes, *, kind="document", correlation_id="", storage_key=""):
    return Artifact.objects.create(
        contact=contact, kind=kind, storage_key=storage_key or f"artifacts/test/{minutes}",
        content_type="text/plain", size=3, occurred_at=at(minutes), correlation_id=correlation_id,
    )  # fmt: skip
