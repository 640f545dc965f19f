"""Register the voice agent: outbound calls on the ``voice`` queue, and the operators'
hand-off queue that a call's ``transfer_to_human`` tool feeds."""

from django.db import migrations

ROWS = [
    {
        "task_type": "call.outbound",
        "agent": "voice",
        "channel": "voice",
        "kind": "in_process",
        "queue": "voice",
        "handler": "agents.voice.handlers.call_outbound",
        "description": "Places an outbound call; an LLM talks to the callee over ConversationRelay.",
    },
    {
        "task_type": "call.handoff",
        "agent": "operators",
        "channel": "voice",
        "kind": "in_process",
        "queue": "voice",
        "handler": "agents.voice.handlers.call_handoff",
        "description": "A caller asked for a person: waits in progress until an operator takes it.",
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
