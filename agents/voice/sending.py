"""The ``call.outbound`` pipeline: the agent kit's ``SendPipeline`` with the voice agent's
hooks (docs/architecture.md, "The send pipeline"). Starting a call is the voice agent's send:
status callbacks and the conversation take it from there."""

from __future__ import annotations

from django.conf import settings

from agents.common.pipeline import Send, SendPipeline
from agents.voice import links, services
from agents.voice.providers import OutboundCall, VoiceProvider, get_provider
from dossiers.models import ConsentStatus
from dossiers.services import consent_status, contact_get_or_create_by_phone
from orchestrator.errors import PermanentError
from orchestrator.models import Task
from orchestrator.services import task_contact_link


def call_start(*, task: Task) -> None:
    """Place the task's call (the handler of call.outbound)."""
    CallPipeline().run(task)


class CallPipeline(SendPipeline):
    operation = "calls.create"

    def normalise_recipient(self, send: Send) -> None:
        if not settings.TWILIO_VOICE_CALLER_ID:
            raise PermanentError("TWILIO_VOICE_CALLER_ID is not set", code="not_configured")
        task = send.task
        send.recipient, send.sender = task.payload["to"], settings.TWILIO_VOICE_CALLER_ID
        # Consent is asked of the contact the task came with; one placed by number (POST
        # /api/tasks/) is linked to the number's contact after that check.
        send.extra["known_contact"] = bool(task.contact_id)

    def check_consent(self, send: Send) -> None:
        task = send.task
        if send.extra["known_contact"]:
            if consent_status(contact_id=task.contact_id, channel="voice") == ConsentStatus.OPTED_OUT:
                raise PermanentError("the contact opted out of calls", code="opted_out")
            return
        contact, _ = contact_get_or_create_by_phone(phone=send.recipient)
        task_contact_link(task_id=task.id, contact_id=contact.id)
        task.contact_id = contact.id

    def already_sent(self, send: Send) -> bool:
        send.record = services.call_for_task(task_id=send.task.id)
        if send.record is None or not send.record.provider_sid:
            return False
        # A previous attempt placed the call and died before recording it: never dial twice.
        call = send.record
        services.call_started(task_id=send.task.id, call_id=call.id, call_sid=call.provider_sid,
                              provider=get_provider().name)  # fmt: skip
        return True

    def render_body(self, send: Send) -> None:
        """A call's "body" is the request to the provider: where it fetches the TwiML, where it
        reports status and recordings, how long the call may last."""
        task, payload = send.task, send.task.payload
        send.body = dict(
            task_id=task.id, twiml_url=links.twiml_url(task.id), status_callback=links.status_callback_url(task.id),
            recording_callback=links.recording_callback_url(task.id), record=bool(payload.get("record")),
            machine_detection=payload.get("machine_detection") or "", gather_url=links.gather_url(task.id),
            time_limit=int(payload.get("max_duration_seconds") or settings.VOICE_MAX_DURATION_SECONDS),
        )  # fmt: skip

    def record_attempt(self, send: Send) -> None:
        if send.record is None:  # tasks created through POST /api/tasks/ get their call row here
            send.record = services.call_create(task_id=send.task.id, to=send.recipient, from_address=send.sender,
                                               contact_id=send.task.contact_id,
                                               correlation_id=send.task.correlation_id)  # fmt: skip

    def provider(self, send: Send) -> VoiceProvider:
        return get_provider()

    def provider_send(self, provider: VoiceProvider, send: Send) -> str:
        call = send.record
        return provider.start_call(
            OutboundCall(to=call.to_address, from_=call.from_address or send.sender, **send.body)
        )

    def record_accepted(self, send: Send, result: str, provider: VoiceProvider) -> None:
        services.call_started(
            task_id=send.task.id, call_id=send.record.id, call_sid=result, provider=provider.name
        )
