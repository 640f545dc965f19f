"""Register the email agent for ``email.send`` (operators can edit the row in the admin)."""

from django.db import migrations

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
