"""Register the voice agent: outbound calls on the ``voice`` queue, and the operators'
hand-off queue that a call's ``transfer_to_human`` tool feeds."""

from django.db import migrations

from orchestrator.migration_ops import seed_registrations

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


class Migration(migrations.Migration):
    dependencies = [("orchestrator", "0002_seed_registry")]

    operations = [seed_registrations(ROWS)]
