"""The export of one contact's dossier (the data subject's copy)."""

from __future__ import annotations

from typing import Any

from django.forms.models import model_to_dict

from dossiers.models import Artifact, Call, ConsentChange, Contact, Email, Message, TranscriptTurn


def contact_export(*, contact: Contact) -> dict[str, Any]:
    """Every row the dossier keeps about the contact, as JSON-ready dicts (blobs by id)."""
    calls = list(Call.objects.filter(contact=contact).values())
    turns = TranscriptTurn.objects.filter(call__contact=contact).order_by("call_id", "sequence")
    by_call: dict[int, list[dict]] = {}
    for turn in turns.values("call_id", "sequence", "speaker", "text", "started_at"):
        by_call.setdefault(turn.pop("call_id"), []).append(turn)
    for call in calls:
        call["turns"] = by_call.get(call["id"], [])
    profile = model_to_dict(contact, exclude=["avatar"])
    profile["id"] = str(contact.id)
    return {
        "contact": profile,
        "consent_history": list(
            ConsentChange.objects.filter(contact=contact).values(
                "channel", "status", "source", "detail", "actor", "created_at"
            )
        ),
        "messages": list(Message.objects.filter(contact=contact).values()),
        "calls": calls,
        "emails": list(Email.objects.filter(contact=contact).values()),
        "artifacts": list(
            Artifact.objects.filter(contact=contact).values(
                "id", "kind", "content_type", "size", "sha256", "occurred_at"
            )
        ),
    }
