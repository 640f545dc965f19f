"""The diagnostic agent: echoes its payload back and succeeds.

It has no provider, so it proves the path intake → broker → worker → registry → handler
on any deployment (``smoke`` and the integration tests use it).
"""

from __future__ import annotations

from rest_framework import serializers

from orchestrator.models import Task
from orchestrator.registry import handler, payload_schema
from orchestrator.services import task_transition
from orchestrator.states import TaskStatus


@handler("diagnostic.echo", channel="system", queue="orchestrator")
def echo(task: Task) -> None:
    task_transition(
        task_id=task.id,
        to=TaskStatus.SUCCEEDED,
        actor=f"agent:{task.agent or 'diagnostic'}",
        result={"echo": task.payload},
    )


class EchoPayloadSerializer(serializers.Serializer):
    """``diagnostic.echo``: any JSON object, returned as ``result.echo``."""

    note = serializers.CharField(required=False, help_text="Anything; every other key is echoed too.")


payload_schema("diagnostic.echo", EchoPayloadSerializer, example={"note": "hello"})
