"""Register the content agent for ``content.generate`` (operators can edit the row in the admin)."""

from django.db import migrations

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


def seed(apps, schema_editor):
    AgentRegistration = apps.get_model("orchestrator", "AgentRegistration")
    for row in ROWS:
        AgentRegistration.objects.update_or_create(task_type=row["task_type"], defaults=row)


def unseed(apps, schema_editor):
    AgentRegistration = apps.get_model("orchestrator", "AgentRegistration")
    AgentRegistration.objects.filter(task_type__in=[r["task_type"] for r in ROWS]).delete()


class Migration(migrations.Migration):
    dependencies = [("orchestrator", "0002_seed_registry")]

    operations = [migrations.RunPython(seed, unseed)]
