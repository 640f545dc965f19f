"""Register the messaging agent's task types (operators edit the rows in the admin)."""

from django.db import migrations

from orchestrator.migration_ops import seed_registrations


def _row(task_type, channel, handler, description):
    return {"task_type": task_type, "agent": "messaging", "channel": channel, "kind": "in_process",
            "queue": "messaging", "handler": f"agents.messaging.handlers.{handler}", "description": description}  # fmt: skip


ROWS = [
    _row("sms.send", "sms", "sms_send", "Send an SMS through Twilio (body, template or prompt)."),
    _row("whatsapp.send", "whatsapp", "whatsapp_send", "Send a WhatsApp message through Twilio."),
    _row("sms.inbound", "sms", "sms_inbound", "An inbound SMS waiting for an operator."),
    _row(
        "whatsapp.inbound",
        "whatsapp",
        "whatsapp_inbound",
        "An inbound WhatsApp message waiting for an operator.",
    ),
]


class Migration(migrations.Migration):
    dependencies = [("messaging", "0001_initial"), ("orchestrator", "0002_seed_registry")]

    operations = [seed_registrations(ROWS)]
