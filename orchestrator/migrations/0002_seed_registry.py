"""Seed the agent registry with the agents that ship with the platform.

Later agents add their own rows in their own data migrations; operators edit the rows
in the admin (Orchestrator → Agent registrations).
"""

from django.db import migrations

ROWS = [
    {
        "task_type": "diagnostic.echo",
        "agent": "diagnostic",
        "channel": "system",
        "kind": "in_process",
        "queue": "orchestrator",
        "handler": "agents.common.diagnostic.echo",
        "description": "Echoes its payload and succeeds: proves intake → queue → worker → handler.",
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
    dependencies = [("orchestrator", "0001_initial")]

    operations = [migrations.RunPython(seed, unseed)]
