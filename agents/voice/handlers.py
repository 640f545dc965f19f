"""Task handlers of the voice agent (run by a Celery worker on the ``voice`` queue)."""

from __future__ import annotations

from agents.voice import sending, services
from agents.voice.api import CallPayloadSerializer, validate_call_payload
from orchestrator.models import Task
from orchestrator.registry import handler, payload_schema, payload_validator, status_check, task_action
from orchestrator.services import task_transition
from orchestrator.states import TaskStatus

payload_validator("call.outbound")(validate_call_payload)


@handler("call.outbound", channel="voice", queue="voice")
def call_outbound(task: Task) -> None:
    """Place the call (the kit's send pipeline, agents/voice/sending.py); status callbacks and
    the conversation take it from there."""
    sending.call_start(task=task)


@handler("call.handoff", channel="voice", queue="voice", internal=True)
def call_handoff(task: Task) -> None:
    """A caller asked for a person: the task waits in progress in the operators' queue."""
    task_transition(task_id=task.id, to=TaskStatus.IN_PROGRESS, actor="agent:operators",
                    details={"waiting_for": "operator", "call_task": task.payload.get("call_task", "")})  # fmt: skip


@task_action("call.outbound", "hang_up")
def call_hang_up(task: Task, actor: str) -> str:
    """The console's Hang up: "asked" when the provider was asked to end the call (its
    ``completed`` callback then cancels the task), "not_placed" when no call exists yet.
    Raises the provider's error (TransientError, PermanentError) when it refused."""
    call = services.call_for_task(task_id=task.id)
    sid = (call.provider_sid if call else "") or task.provider_id
    if not sid:
        return "not_placed"
    if call is not None:
        services.call_end_reason_set(
            call_id=call.id, reason=f"{services.OPERATOR_HANG_UP}: hung up by {actor}"
        )
    services.call_hang_up(call_sid=sid)
    return "asked"


@status_check("call.outbound")
def call_status_check(task_id) -> str:
    return services.call_status_check(task_id=task_id)


# The same serializer validates call.outbound payloads (validate_call_payload) and documents them.
payload_schema("call.outbound", CallPayloadSerializer, validates=False,
               example={"to": "+14155550123", "goal": "confirm the delivery window", "greeting": "Hi, this is Acme."})  # fmt: skip
