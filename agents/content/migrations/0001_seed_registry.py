"""Register the content agent for ``content.generate`` (operators can edit the row in the admin)."""

from django.db import migrations

from orchestrator.migration_ops import seed_registrations

ROWS = [
    {
        "task_type": "content.generate",
        "agent": "content",
        "channel": "content",
        "kind": "in_process",
        "queue": "content",
        "handler": "agents.content.handlers.generate_content",
        "description": "Writes a summary or an HTML document with the content model; stores it as an artifact with a signed URL.",
    },
]


class Migration(migrations.Migration):
    dependencies = [("orchestrator", "0002_seed_registry")]

    operations = [seed_registrations(ROWS)]
