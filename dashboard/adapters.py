"""The console's guesses about interfaces other branches own, each in one small function.

When the messaging agent, the voice agent or dossiers ship the real thing, only these
functions change (see docs/console.md, "Interfaces the console assumes").
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from orchestrator import registry


def contact_avatar_url(contact: Any) -> str:
    """The contact's picture, or "" (the console then draws an initials avatar).

    Guess: dossiers may add ``Contact.avatar`` (an ImageField/FileField or a URL string).
    """
    avatar = getattr(contact, "avatar", None)
    if not avatar:
        return ""
    return str(getattr(avatar, "url", avatar))


def inbound_text(task: Any, message: Any | None) -> str:
    """What the customer wrote: the dossier Message the messaging agent saved for the inbound
    task, else the task payload (``body``, or Twilio's raw ``Body``)."""
    if message is not None:
        return message.body
    payload = task.payload or {}
    return str(payload.get("body") or payload.get("Body") or "")


def reply_address(*, channel: str, contact: Any, message: Any | None) -> str:
    """Where a reply goes: whoever wrote (the inbound Message's from address), else the contact's
    address on that channel. WhatsApp addresses keep Twilio's ``whatsapp:`` prefix."""
    if message is not None and message.from_address:
        return message.from_address
    if contact is None:
        return ""
    if channel == "whatsapp":
        return contact.whatsapp or (f"whatsapp:{contact.phone}" if contact.phone else "")
    return contact.phone


def whatsapp_templates() -> list[dict[str, Any]]:
    """Approved WhatsApp templates an operator may send outside the 24-hour window:
    ``[{"name", "content_sid", "variables": [names], "preview"}]``.

    Those the agents offer through the orchestrator's registry (the messaging agent's
    ``MessageTemplate`` rows with a Content SID), then those of the ``WHATSAPP_TEMPLATES``
    setting (a list of those dicts) whose name no agent offers.
    """
    offered = registry.templates_for("whatsapp")
    names = {t["name"] for t in offered}
    extra = [t for t in getattr(settings, "WHATSAPP_TEMPLATES", []) if t.get("name") not in names]
    return [*offered, *extra]
