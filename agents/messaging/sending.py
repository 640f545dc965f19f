"""The ``sms.send`` / ``whatsapp.send`` pipeline: the agent kit's ``SendPipeline`` with the
messaging agent's hooks (docs/architecture.md, "The send pipeline")."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from agents.common.pipeline import Send, SendPipeline
from agents.messaging import bodies, segments
from agents.messaging.models import SendAttempt
from agents.messaging.providers import get_provider
from agents.messaging.providers.base import MessagingProvider, OutboundMessage, SendResult
from agents.messaging.statuses import OPT_OUT_ERROR
from comms_platform import ratelimit
from dossiers.models import ConsentStatus, Direction, Message
from dossiers.services import (
    InvalidPhoneNumber,
    consent_set,
    consent_status,
    contact_get_or_create_by_phone,
    message_outbound_write,
    message_record_accepted,
    message_record_refused,
    normalize_phone,
)
from dossiers.signals import interaction_recorded_notify
from orchestrator.errors import AgentError, PermanentError, TransientError
from orchestrator.metrics import observe_provider_call
from orchestrator.models import Task
from orchestrator.services import (
    Transition,
    task_attempt_give_back,
    task_contact_link,
    task_provider_id_set_if_unset,
    task_transition_many,
)
from orchestrator.states import IllegalTransition, TaskStatus

S = TaskStatus
STATUS_PATH = "/webhooks/twilio/messaging/status/"
WHATSAPP_WINDOW = timedelta(hours=24)
# Waiting for a rate-limit token this long inside the worker beats a retry round trip.
MAX_INLINE_WAIT_SECONDS = 5.0


def status_callback_url(task_id: Any) -> str:
    # The task id in the query lets a callback find its task even when the worker died
    # before saving the SID; the fragment asks Twilio to retry callbacks that meet a 5xx.
    return f"{settings.PUBLIC_BASE_URL}{STATUS_PATH}?task={task_id}{settings.TWILIO_STATUS_CALLBACK_OVERRIDE}"


def message_send(*, task: Task, channel: str) -> None:
    """Send the task's message (the handler of sms.send / whatsapp.send)."""
    MessagePipeline(channel).run(task)


class MessagePipeline(SendPipeline):
    operation = "messages.create"

    def __init__(self, channel: str) -> None:
        self.channel = channel

    def normalise_recipient(self, send: Send) -> None:
        try:
            send.recipient = normalize_phone(send.task.payload.get("to") or "")
        except InvalidPhoneNumber as exc:
            # Intake checks the number; a task made another way (admin, a chain) fails here at
            # once, as Twilio's 21211 would, instead of being retried until it dead-letters.
            raise PermanentError(str(exc), code="invalid_number") from None
        task = send.task
        if task.contact_id:
            send.contact, send.extra["new_contact"] = task.contact, False
            return
        send.contact, send.extra["new_contact"] = contact_get_or_create_by_phone(phone=send.recipient)
        task_contact_link(task_id=task.id, contact_id=send.contact.id)
        task.contact = send.contact

    def check_consent(self, send: Send) -> None:
        # A contact created a moment ago has no consent record to look up (a campaign's usual case).
        if send.extra["new_contact"]:
            return
        if consent_status(contact_id=send.contact.id, channel=self.channel) == ConsentStatus.OPTED_OUT:
            raise PermanentError(f"the contact opted out of {self.channel}", code="opted_out")

    def already_sent(self, send: Send) -> bool:
        return _reconcile(task=send.task)

    def render_body(self, send: Send) -> None:
        try:
            send.body = bodies.build(payload=send.task.payload, channel=self.channel, contact=send.contact)
        except bodies.BodyError as exc:
            raise PermanentError(str(exc), code="invalid_body") from None

    def apply_channel_rules(self, send: Send) -> None:
        send.extra["segments"] = _check_body(send.body, self.channel)
        if self.channel == "whatsapp":
            _check_window(send.contact, send.body)
        send.extra["from"], send.extra["service"] = _sender(self.channel)
        send.sender = send.extra["from"] or send.extra["service"]

    def pace_sender(self, send: Send) -> None:
        # Paced before anything is written: a send that waits for its sender's turn (and comes
        # back as a retry with its attempt given back) writes one dossier message, not one per wait.
        _rate_limit(send.task, send.sender)

    def record_attempt(self, send: Send) -> None:
        task, info = send.task, send.extra["segments"]
        to = f"whatsapp:{send.recipient}" if self.channel == "whatsapp" else send.recipient
        send.record = message_outbound_write(
            task_id=task.id, retry=task.attempts > 1, contact=send.contact, correlation_id=task.correlation_id,
            channel=self.channel, from_address=send.sender, to_address=to, body=send.body.text, status="pending",
            segments=info.segments if info else 1, encoding=info.encoding if info else "", occurred_at=timezone.now(),
        )  # fmt: skip
        if task.attempts <= 1:  # the message is new: an open conversation with the contact shows it
            interaction_recorded_notify(kind="message", object_id=send.record.id, contact_id=send.contact.id,
                                        channel=self.channel, direction="outbound", task_id=task.id,
                                        occurred_at=send.record.occurred_at,
                                        contact_is_new=send.extra["new_contact"])  # fmt: skip
        # The attempt row is committed BEFORE the call: if this worker dies after the provider
        # accepted but before we saved the SID, the next claim finds it "started" and
        # reconciles instead of sending a second message blindly.
        send.attempt = SendAttempt.objects.create(task=task, number=task.attempts)

    def provider(self, send: Send) -> MessagingProvider:
        return get_provider()

    def provider_send(self, provider: MessagingProvider, send: Send) -> SendResult:
        payload, rendered = send.task.payload, send.body
        outbound = OutboundMessage(
            to=send.record.to_address, body=rendered.text, status_callback=status_callback_url(send.task.id),
            from_=send.extra["from"], messaging_service_sid=send.extra["service"],
            media_urls=list(payload.get("media_url") or []), content_sid=rendered.content_sid,
            content_variables=rendered.content_variables,
        )  # fmt: skip
        return provider.send(outbound)

    def record_refused(self, send: Send, error: AgentError) -> None:
        task, attempt = send.task, send.attempt
        if getattr(error, "maybe_sent", False):
            # No answer after the request left: the next attempt asks the provider before sending.
            SendAttempt.objects.filter(id=attempt.id).update(detail=f"no answer: {error.message}"[:300])
            return
        outcome = SendAttempt.Outcome.REFUSED if error.permanent else SendAttempt.Outcome.RETRY
        _finish_attempt(attempt, outcome, detail=error.message)
        code = str(error.code or "")
        message_record_refused(message_id=send.record.id, code=code, error=str(error))
        if code == OPT_OUT_ERROR and send.record.contact_id:
            consent_set(contact_id=send.record.contact_id, channel="sms", status=ConsentStatus.OPTED_OUT,
                        source="provider_error", detail=f"Twilio {code}", actor=f"agent:{task.agent or 'messaging'}")  # fmt: skip
        if not error.permanent and task.attempts > settings.MESSAGING_MAX_RETRIES:
            raise PermanentError(f"gave up after {task.attempts} attempts: {error}", code=code) from error

    def record_accepted(self, send: Send, result: SendResult, provider: MessagingProvider) -> None:
        _accepted(task=send.task, message=send.record, attempt=send.attempt, sid=result.sid,
                  status=result.status, via=provider.name)  # fmt: skip


# --- the channel rules and the sender ------------------------------------------------------


def _sender(channel: str) -> tuple[str, str]:
    """(From, MessagingServiceSid): WhatsApp needs a whatsapp: sender; SMS prefers the service."""
    if channel == "whatsapp":
        if not settings.TWILIO_WHATSAPP_FROM:
            raise PermanentError(
                "WhatsApp is not configured (TWILIO_WHATSAPP_FROM is empty)", code="not_configured"
            )
        return settings.TWILIO_WHATSAPP_FROM, ""
    if settings.TWILIO_MESSAGING_SERVICE_SID:
        return "", settings.TWILIO_MESSAGING_SERVICE_SID
    return settings.TWILIO_SMS_FROM, ""


def _check_window(contact, rendered: bodies.Rendered) -> None:
    if rendered.content_sid:
        return  # an approved template may open a conversation at any time
    last = contact.last_inbound_whatsapp_at
    if last is None or timezone.now() - last > WHATSAPP_WINDOW:
        when = "never wrote" if last is None else f"last wrote at {last:%Y-%m-%d %H:%M} UTC"
        raise PermanentError(
            f"outside the WhatsApp 24-hour window (the contact {when}): free text cannot be delivered; "
            "send an approved template (a MessageTemplate with a Content SID)",
            code="whatsapp_window_closed",
        )


def _check_body(rendered: bodies.Rendered, channel: str) -> segments.SegmentInfo | None:
    if rendered.content_sid:
        return None
    if channel == "whatsapp":
        if len(rendered.text) > settings.WHATSAPP_MAX_BODY_CHARS:
            raise PermanentError(
                f"the WhatsApp body is {len(rendered.text)} characters", code="body_too_long"
            )
        return None
    info = segments.analyse(rendered.text)
    if info.segments > settings.SMS_MAX_SEGMENTS:
        raise PermanentError(
            f"the SMS body needs {info.segments} {info.encoding} segments; the limit is {settings.SMS_MAX_SEGMENTS}",
            code="body_too_long",
        )
    return info


def _rate_limit(task: Task, sender: str) -> None:
    wait = ratelimit.acquire(f"messaging:{sender}", rate=float(settings.MESSAGING_RATE_PER_SECOND))
    if wait > MAX_INLINE_WAIT_SECONDS:
        # Waiting for the sender's turn is not a failed attempt: give the attempt back, so a
        # long queue behind a slow sender is deferred, never dead-lettered.
        task_attempt_give_back(task_id=task.id)
        task.attempts = max(0, task.attempts - 1)
        raise TransientError(
            f"rate limit of {sender}: next slot in {wait:.1f}s", code="rate_limited", retry_after=wait
        )
    if wait > 0:
        time.sleep(wait)
        _rate_limit(task, sender)


# --- attempts --------------------------------------------------------------------------------


def attempts_close_open() -> int:
    """Close the send attempts left ``started`` on a task that has ended: accepted when the task
    succeeded (a callback proved the provider had it), abandoned otherwise. Returns how many."""
    from orchestrator.states import FINAL

    now = timezone.now()
    open_attempts = SendAttempt.objects.filter(outcome=SendAttempt.Outcome.STARTED)
    accepted = open_attempts.filter(task__status=S.SUCCEEDED).update(
        outcome=SendAttempt.Outcome.ACCEPTED, finished_at=now,
        detail="closed: the provider's callbacks show it was accepted",
    )  # fmt: skip
    abandoned = open_attempts.filter(task__status__in=FINAL - {S.SUCCEEDED}).update(
        outcome=SendAttempt.Outcome.ABANDONED, finished_at=now,
        detail="closed: the task ended before this attempt was answered",
    )  # fmt: skip
    return accepted + abandoned


def _finish_attempt(attempt: SendAttempt, outcome: str, *, sid: str = "", detail: str = "") -> None:
    SendAttempt.objects.filter(id=attempt.id).update(
        outcome=outcome, provider_sid=sid, detail=detail[:300], finished_at=timezone.now()
    )


def _accepted(
    *, task: Task, message: Message, attempt: SendAttempt | None, sid: str, status: str, via: str
) -> None:
    """Record what the provider accepted: the attempt (unless already finished), the message,
    the task, in one transaction of three statements (every send of a campaign passes here)."""
    with transaction.atomic():
        if attempt is not None:
            _finish_attempt(attempt, SendAttempt.Outcome.ACCEPTED, sid=sid)
        message_record_accepted(message_id=message.id, sid=sid, status=status)
        (outcome,) = task_transition_many(
            [Transition(task_id=task.id, to=S.IN_PROGRESS, actor=f"agent:{task.agent or 'messaging'}",
                        provider_id=sid, details={"provider": via, "sid": sid, "status": status})]
        )  # fmt: skip
        if isinstance(outcome, Task.DoesNotExist):
            raise outcome
        if isinstance(outcome, IllegalTransition) or not outcome.applied:
            # A fast callback finished the task already: keep the SID on it anyway.
            task_provider_id_set_if_unset(task_id=task.id, provider_id=sid)


def _reconcile(*, task: Task) -> bool:
    """True when an earlier attempt of this task already reached the provider (nothing to send)."""
    if task.attempts <= 1:
        return False  # the first attempt: there is no earlier one (attempt rows carry the count)
    open_attempt = task.send_attempts.filter(outcome=SendAttempt.Outcome.STARTED).order_by("-number").first()
    if open_attempt is None:
        return False
    message = Message.objects.filter(task=task, direction=Direction.OUTBOUND).first()
    sid = message.provider_sid if message and message.provider_sid else None  # set by a callback
    if sid is None and message is not None:
        provider = get_provider()
        with observe_provider_call(provider.name, "messages.list"):
            sid = provider.find_recent(
                to=message.to_address, since=open_attempt.started_at, body=message.body
            )
    if sid is None:
        _finish_attempt(
            open_attempt, SendAttempt.Outcome.RETRY, detail="worker lost; the provider has no such message"
        )
        return False
    _finish_attempt(
        open_attempt, SendAttempt.Outcome.ACCEPTED, sid=sid, detail="recovered after a lost worker"
    )
    _accepted(task=task, message=message, attempt=None, sid=sid, status=message.status or "queued",
              via="reconciled")  # fmt: skip
    return True
