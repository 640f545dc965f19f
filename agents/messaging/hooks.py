"""What the messaging agent offers other apps through the orchestrator's registry hooks."""

from __future__ import annotations

from typing import Any

from orchestrator import registry


@registry.hook("whatsapp.templates")
def approved_whatsapp_templates() -> list[dict[str, Any]]:
    """Templates an operator may send outside WhatsApp's 24-hour window: the WhatsApp
    ``MessageTemplate`` rows approved by Meta (a Twilio Content SID), with the variable names
    their numbered slots take."""
    from agents.messaging.models import MessageTemplate

    rows = (
        MessageTemplate.objects.filter(channel="whatsapp").exclude(content_sid="").order_by("name", "locale")
    )
    seen: dict[str, dict[str, Any]] = {}
    for t in rows:
        variables = [t.content_variables[slot] for slot in sorted(t.content_variables, key=str)]
        seen.setdefault(t.name, {"name": t.name, "variables": variables, "preview": t.body})
    return list(seen.values())
