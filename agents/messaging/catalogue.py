"""What the messaging agent offers the console through the orchestrator's registry: its
approved WhatsApp templates (``MessageTemplate`` rows with a Twilio Content SID)."""

from __future__ import annotations

from typing import Any

from agents.messaging.models import MessageTemplate, TemplateChannel
from orchestrator.registry import reply_templates


@reply_templates(TemplateChannel.WHATSAPP)
def approved_whatsapp_templates() -> list[dict[str, Any]]:
    rows = MessageTemplate.objects.filter(channel=TemplateChannel.WHATSAPP).exclude(content_sid="")
    return [
        {
            "name": t.name,
            "content_sid": t.content_sid,
            "variables": sorted(t.content_variables, key=lambda slot: (len(slot), slot)),
            "preview": t.body,
        }
        for t in rows.order_by("name", "locale")
    ]
