"""Task handlers of the voice agent (run by a Celery worker on the ``voice`` queue)."""

from __future__ import annotations

from django.conf import settings

from agents.voice import links, services
from agents.voice.api import CallPayloadSerializer, validate_call_payload
from agents.voice.providers import OutboundCall, get_provider
from dossiers.models import ConsentStatus
from dossiers.services import consent_status, contact_get_or_create_by_phone
from orchestrator.errors import PermanentError
from orchestrator.models import Task
from orchestrator.registry import handler, payload_schema, payload_validator, status_check, task_action
from orchestrator.services import task_contact_link, task_transition
from orchestrator.states import TaskStatus

payload_validator("call.outbound")(validate_call_payload)


@handler("call.outbound", channel="voice", queue="voice")
def call_outbound(task: Task) -> None:
    """Place the call; status callbacks and the conversation take it from there."""
    if not settings.TWILIO_VOICE_CALLER_ID:
        raise PermanentError("TWILIO_VOICE_CALLER_ID is not set", code="not_configured")
    if (
        task.contact_id
        and consent_status(contact_id=task.contact_id, channel="voice") == ConsentStatus.OPTED_OUT
    ):
        raise PermanentError("the contact opted out of calls", code="opted_out")
    if not task.contact_id:  # placed by number (POST /api/tasks/): link the number's contact
        contact, _ = contact_get_or_create_by_phone(phone=task.payload["to"])
        task_contact_link(task_id=task.id, contact_id=contact.id)
        task.contact_id = contact.id
    call = services.call_get_or_create_for_task(task=task, from_address=settings.TWILIO_VOICE_CALLER_ID)
    provider = get_provider()
    if call.provider_sid:
        # A previous attempt placed the call and died before recording it: never dial twice.
        services.call_started(
            task_id=task.id, call_id=call.id, call_sid=call.provider_sid, provider=provider.name
        )
        return
    payload = task.payload
    sid = provider.start_call(
        OutboundCall(
            task_id=task.id,
            to=call.to_address,
            from_=call.from_address or settings.TWILIO_VOICE_CALLER_ID,
            twiml_url=links.twiml_url(task.id),
            status_callback=links.status_callback_url(task.id),
            recording_callback=links.recording_callback_url(task.id),
            record=bool(payload.get("record")),
            machine_detection=payload.get("machine_detection") or "",
            time_limit=int(payload.get("max_duration_seconds") or settings.VOICE_MAX_DURATION_SECONDS),
            gather_url=links.gather_url(task.id),
        )
    )
    services.call_started(task_id=task.id, call_id=call.id, call_sid=sid, provider=provider.name)


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
    get_provider().hang_up(sid)
    return "asked"


@status_check("call.outbound")
def call_status_check(task_id) -> str:
    return services.call_status_check(task_id=task_id)


# The same serializer validates call.outbound payloads (validate_call_payload) and documents them.
payload_schema("call.outbound", CallPayloadSerializer, validates=False,
               example={"to": "+14155550123", "goal": "confirm the delivery window", "greeting": "Hi, this is Acme."})  # fmt: skip
