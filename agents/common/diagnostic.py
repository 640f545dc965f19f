"""The diagnostic agent: echoes its payload back and succeeds.

It has no provider, so it proves the path intake → broker → worker → registry → handler
on any deployment (``smoke`` and the integration tests use it).
"""

from __future__ import annotations

from orchestrator.models import Task
from orchestrator.registry import handler
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
