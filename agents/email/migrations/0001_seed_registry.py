"""Register the email agent for ``email.send`` (operators can edit the row in the admin)."""

from django.db import migrations

from orchestrator.migration_ops import seed_registrations

ROWS = [
    {
        "task_type": "email.send",
        "agent": "email",
        "channel": "email",
        "kind": "in_process",
        "queue": "email",
        "handler": "agents.email.handlers.send_email",
        "description": "Sends an email through SendGrid or SMTP (with fallback); SendGrid events finish the task.",
    },
]


class Migration(migrations.Migration):
    dependencies = [("orchestrator", "0002_seed_registry")]

    operations = [seed_registrations(ROWS)]
