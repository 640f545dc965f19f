"""The ``email.send`` pipeline: the agent kit's ``SendPipeline`` (agents/common/pipeline.py)
with the email agent's hooks, in django-anymail's shape: normalise the recipient → consent →
render the body → channel rules → pace the sender → record the attempt → ``provider.send``
(observed: latency, outcome, error code; once per provider of the fallback chain) → record
accepted / refused → move the task.

Each hook calls one small step function below; a retried task reuses its ``Email`` row.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from typing import Any

from django.conf import settings
from django.utils import timezone

from agents.common.pipeline import Send, SendPipeline
from agents.email.providers import EmailProvider, FallbackError, SendResult, get_provider, provider_chain
from agents.email.services import Body, outgoing_for, render_body
from comms_platform import ratelimit
from dossiers.models import ConsentStatus, Contact, Email, EmailEvent
from dossiers.services import artifact_store, consent_status
from dossiers.signals import interaction_recorded_notify
from orchestrator.errors import AgentError, PermanentError, TransientError
from orchestrator.models import Task
from orchestrator.services import task_transition
from orchestrator.states import IllegalTransition, TaskStatus

log = logging.getLogger(__name__)

ACTOR = "agent:email"


def email_send(*, task: Task) -> SendResult | None:
    """Send the task's email once, through the provider chain; the handler of ``email.send``.
    Returns what the provider accepted (None when an earlier attempt had sent it already)."""
    return EmailPipeline().run(task)


class EmailPipeline(SendPipeline):
    operation = "mail.send"

    def normalise_recipient(self, send: Send) -> None:
        send.record = (
            Email.objects.filter(task_id=send.task.id).select_related("html").first()
        )  # a retry reuses it
        send.recipient = send.record.to_address if send.record else recipient_for(task=send.task)

    def check_consent(self, send: Send) -> None:
        if send.record is None:  # checked when the row was written
            consent_check(contact=send.task.contact, to=send.recipient)

    def already_sent(self, send: Send) -> bool:
        email = send.record
        if email is None or not email.provider_message_id:
            return False
        # Sent by an earlier attempt whose worker died afterwards: only the task is left to move.
        result = SendResult(email.provider, email.provider_message_id, awaits_events=email.provider != "smtp")
        task_move_after_send(task=send.task, email=email, result=result)
        return True

    def render_body(self, send: Send) -> None:
        if send.record is None:
            send.body = render_body(payload=send.task.payload, contact=send.task.contact)

    def pace_sender(self, send: Send) -> None:
        pace_sender(sender=send.record.from_address if send.record else settings.DEFAULT_FROM_EMAIL)

    def record_attempt(self, send: Send) -> None:
        if send.record is None:
            send.record = email_record_attempt(task=send.task, to=send.recipient, body=send.body)

    def call_provider(self, send: Send) -> tuple[EmailProvider, SendResult]:
        """The configured provider, then the fallback on a FallbackError; each call observed."""
        send.extra["message"] = outgoing_for(email=send.record, task=send.task)
        failures: list[str] = []
        chain = provider_chain()
        for name in chain:
            provider = get_provider(name)
            try:
                return provider, self.observed_send(provider, send)
            except FallbackError as exc:
                failures.append(f"{name}: {exc.message}")
                _record_local_event(
                    email=send.record,
                    event="provider_failed",
                    detail={"provider": name, "error": exc.message},
                )
                log.warning("email %s: %s failed (%s)%s", send.record.id, name, exc.code,
                            ", trying the fallback" * (name != chain[-1]))  # fmt: skip
                last = exc
        raise TransientError("; ".join(failures), code=last.code, retry_after=last.retry_after)

    def provider_send(self, provider: EmailProvider, send: Send) -> SendResult:
        return provider.send(send.extra["message"])

    def record_refused(self, send: Send, error: AgentError) -> None:
        email_record_refused(email=send.record, error=error)

    def record_accepted(self, send: Send, result: SendResult, provider: EmailProvider) -> None:
        email_record_accepted(email=send.record, result=result)
        task_move_after_send(task=send.task, email=send.record, result=result)


# --- the steps ---------------------------------------------------------------------------


def recipient_for(*, task: Task) -> str:
    """The payload's ``to``, else the contact's address (intake validated the form)."""
    contact = task.contact
    to = (task.payload.get("to") or (contact.email if contact else "")).strip()
    if not to:
        raise PermanentError(
            "no recipient: the payload has no 'to' and the contact no email", code="no_address"
        )
    return to


def consent_check(*, contact: Contact | None, to: str) -> None:
    """Refuse opted-out contacts and addresses that hard-bounced before, before anything is sent."""
    if contact is None:
        return
    if consent_status(contact_id=contact.id, channel="email") == ConsentStatus.OPTED_OUT:
        raise PermanentError("the contact opted out of email", code="opted_out")
    if contact.email_undeliverable and to.lower() == contact.email.lower():
        raise PermanentError("the contact's address hard-bounced before", code="undeliverable")


def pace_sender(*, sender: str) -> None:
    """EMAIL_RATE_PER_SECOND per From address (0, the default: no limit — SendGrid paces itself).
    An attempt that would wait is retried when the sender's next slot comes."""
    wait = ratelimit.acquire(f"email:{sender}", rate=float(settings.EMAIL_RATE_PER_SECOND))
    if wait > 0:
        raise TransientError(f"rate limit of the sender: next slot in {wait:.1f}s", code="rate_limited",
                             retry_after=wait)  # fmt: skip


def email_record_attempt(*, task: Task, to: str, body: Body) -> Email:
    """The Email row (status ``queued``) and its HTML artifact, before the provider is called."""
    html = artifact_store(
        content=body.html.encode(), content_type="text/html; charset=utf-8", kind="html",
        contact_id=task.contact_id, task_id=task.id, correlation_id=task.correlation_id,
    )  # fmt: skip
    email = Email.objects.create(
        contact=task.contact, task=task, correlation_id=task.correlation_id, from_address=settings.DEFAULT_FROM_EMAIL,
        to_address=to, subject=task.payload.get("subject", "")[:300], text_body=body.text, html=html,
        status="queued", occurred_at=timezone.now(),
    )  # fmt: skip
    if task.contact_id:  # the email joins the contact's open email conversation, if any (after commit)
        interaction_recorded_notify(kind="email", object_id=email.id, contact_id=task.contact_id, channel="email",
                                    direction="outbound", task_id=task.id, occurred_at=email.occurred_at)  # fmt: skip
    return email


def email_record_accepted(*, email: Email, result: SendResult) -> None:
    Email.objects.filter(id=email.id).update(
        provider=result.provider, provider_message_id=result.message_id, updated_at=timezone.now()
    )
    # Events may already have moved the status on (the simulator is quick): only lift "queued".
    Email.objects.filter(id=email.id, status="queued").update(status="sent")


def email_record_refused(*, email: Email, error: AgentError) -> None:
    """A permanent refusal fails the email now (the dossier shows it never left); a transient
    one leaves it queued for the retry."""
    if error.permanent:
        Email.objects.filter(id=email.id).update(status="failed", updated_at=timezone.now())


def task_move_after_send(*, task: Task, email: Email, result: SendResult) -> None:
    """``in_progress`` until the provider's events finish it; ``succeeded`` over SMTP."""
    target = TaskStatus.IN_PROGRESS if result.awaits_events else TaskStatus.SUCCEEDED
    # A webhook may already have finished the task (delivered or bounced): then this
    # transition is illegal and the webhook's outcome stands.
    with contextlib.suppress(IllegalTransition):
        task_transition(
            task_id=task.id, to=target, actor=ACTOR, details={"provider": result.provider, "email_id": email.id},
            provider_id=result.message_id,
            result={"email_id": email.id, "provider": result.provider, "message_id": result.message_id},
        )  # fmt: skip


def _record_local_event(*, email: Email, event: str, detail: dict[str, Any]) -> None:
    EmailEvent.objects.create(
        email=email,
        event=event,
        provider_event_id=f"local:{uuid.uuid4()}",
        detail=detail,
        occurred_at=timezone.now(),
    )
