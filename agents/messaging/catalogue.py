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
            # The names the send payload's ``variables`` take, in the order of Twilio's slots.
            "variables": [
                t.content_variables[slot] for slot in sorted(t.content_variables, key=lambda s: (len(s), s))
            ],
            "preview": t.body,
        }
        for t in rows.order_by("name", "locale")
    ]
