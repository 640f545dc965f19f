"""Seed the agent registry with the agents that ship with the platform.

Later agents add their own rows in their own data migrations; operators edit the rows
in the admin (Orchestrator → Agent registrations).
"""

from django.db import migrations

from orchestrator.migration_ops import seed_registrations

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


class Migration(migrations.Migration):
    dependencies = [("orchestrator", "0001_initial")]

    operations = [seed_registrations(ROWS)]
