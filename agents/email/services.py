"""Email services: build the message of an ``email.send`` task, send it (with fallback),
and apply SendGrid's delivery events to the email, the task and the contact.

Keyword-only and typed; the handler and the webhook view only call these.
"""

from __future__ import annotations

import contextlib
import logging
import mimetypes
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.core import signing
from django.db import transaction
from django.template import TemplateDoesNotExist
from django.template.loader import render_to_string
from django.utils import timezone

from agents.common.errors import AgentError, PermanentError, TransientError
from agents.content.text import artifact_get, artifact_read, html_to_text
from agents.email.providers import (
    Attachment,
    FallbackError,
    OutgoingEmail,
    SendResult,
    get_provider,
    provider_chain,
)
from dossiers.models import Artifact, ConsentStatus, Contact, Email, EmailEvent
from dossiers.services import artifact_store, consent_set, consent_status
from orchestrator.models import Task
from orchestrator.services import task_transition
from orchestrator.states import FINAL, IllegalTransition, TaskStatus

log = logging.getLogger(__name__)

ACTOR = "agent:email"
UNSUBSCRIBE_SALT = "email-unsubscribe"


# --- Building the message -------------------------------------------------------------


@dataclass(frozen=True)
class Body:
    text: str
    html: str


def email_prepare(*, task: Task) -> Email:
    """The task's Email row (created once; a retried task reuses it). Refuses opted-out
    or undeliverable recipients with a PermanentError before anything is sent."""
    existing = Email.objects.filter(task_id=task.id).select_related("html").first()
    if existing is not None:
        return existing
    payload = task.payload
    contact = task.contact
    to = payload.get("to") or (contact.email if contact else "")
    if not to:
        raise PermanentError(
            "no recipient: the payload has no 'to' and the contact no email", code="no_address"
        )
    if contact is not None:
        if consent_status(contact_id=contact.id, channel="email") == ConsentStatus.OPTED_OUT:
            raise PermanentError("the contact opted out of email", code="opted_out")
        if contact.email_undeliverable and to.lower() == contact.email.lower():
            raise PermanentError("the contact's address hard-bounced before", code="undeliverable")
    body = render_body(payload=payload, contact=contact)
    html = artifact_store(
        content=body.html.encode(), content_type="text/html; charset=utf-8", kind="html",
        contact_id=task.contact_id, task_id=task.id, correlation_id=task.correlation_id,
    )  # fmt: skip
    return Email.objects.create(
        contact=contact, task=task, correlation_id=task.correlation_id, from_address=settings.DEFAULT_FROM_EMAIL,
        to_address=to, subject=payload.get("subject", "")[:300], text_body=body.text, html=html,
        status="queued", occurred_at=timezone.now(),
    )  # fmt: skip


def render_body(*, payload: dict[str, Any], contact: Contact | None) -> Body:
    """Text and HTML: given, rendered from ``templates/email/<template>.{html,txt}``, or
    taken from a generated artifact; HTML falls back to ``email/default.html``."""
    context = {**payload.get("context", {}), "contact": contact, "subject": payload.get("subject", "")}
    text, html = payload.get("text", ""), payload.get("html", "")
    if payload.get("template"):
        name = payload["template"]
        html = html or render_to_string(f"email/{name}.html", context)
        text = text or _optional_template(f"email/{name}.txt", context) or html_to_text(html)
    artifact_id, mode = payload.get("artifact"), payload.get("artifact_as", "body")
    if artifact_id and mode == "body":
        artifact = artifact_get(artifact_id=artifact_id)
        content = artifact_read(artifact=artifact).decode("utf-8", errors="replace")
        if artifact.content_type.startswith("text/html"):
            html, text = html or content, text or html_to_text(content)
        else:
            text = f"{text}\n\n{content}".strip()
    if artifact_id and mode == "link":
        from agents.content.links import artifact_url

        url = artifact_url(artifact_id=artifact_id)
        context["artifact_url"] = url
        text = f"{text}\n\n{url}".strip()
    if not html:
        html = render_to_string("email/default.html", {**context, "text": text})
    return Body(text=text or html_to_text(html), html=html)


def _optional_template(name: str, context: dict[str, Any]) -> str:
    try:
        return render_to_string(name, context)
    except TemplateDoesNotExist:
        return ""


def attachments_for(*, payload: dict[str, Any]) -> tuple[Attachment, ...]:
    """Attachments listed by artifact id (or {artifact, filename}); the artifact_as=attachment
    form of ``artifact`` too. One query for all of them."""
    refs = [item if isinstance(item, dict) else {"artifact": item} for item in payload.get("attachments", [])]
    if payload.get("artifact") and payload.get("artifact_as") == "attachment":
        refs.append({"artifact": payload["artifact"]})
    wanted = [(_artifact_id(ref.get("artifact")), ref.get("filename", "")) for ref in refs]
    rows = Artifact.objects.in_bulk([a for a, _ in wanted])
    missing = [str(a) for a, _ in wanted if a not in rows]
    if missing:
        raise PermanentError(f"artifact {', '.join(missing)} no longer exists", code="artifact_missing")
    return tuple(
        Attachment(
            filename=name or default_filename(rows[a]),
            content=artifact_read(artifact=rows[a]),
            content_type=rows[a].content_type.split(";")[0],
        )
        for a, name in wanted
    )


def _artifact_id(value: Any) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise PermanentError(f"{value!r} is not an artifact id", code="bad_payload") from None


def default_filename(artifact: Artifact) -> str:
    ext = mimetypes.guess_extension(artifact.content_type.split(";")[0]) or ".bin"
    return f"{artifact.kind}-{str(artifact.id)[:8]}{ext}"


def unsubscribe_url(*, email_id: int) -> str:
    token = signing.Signer(salt=UNSUBSCRIBE_SALT).sign(str(email_id))
    return f"{settings.PUBLIC_BASE_URL}/email/unsubscribe/{token}/"


def outgoing_for(*, email: Email, task: Task) -> OutgoingEmail:
    html = artifact_read(artifact=email.html).decode() if email.html_id else ""
    return OutgoingEmail(
        task_id=str(task.id), email_id=email.id, from_email=email.from_address, to=email.to_address,
        subject=email.subject, text=email.text_body, html=html, reply_to=task.payload.get("reply_to", ""),
        list_unsubscribe=f"<{unsubscribe_url(email_id=email.id)}>",
        attachments=attachments_for(payload=task.payload), categories=(task.type,),
    )  # fmt: skip


# --- Sending ----------------------------------------------------------------------------


def email_send(*, task: Task) -> SendResult:
    """Prepare, send (main provider, then the fallback on a transient failure), record."""
    email = email_prepare(task=task)
    if email.provider_message_id:  # sent by an earlier attempt whose worker died afterwards
        result = SendResult(email.provider, email.provider_message_id, awaits_events=email.provider != "smtp")
    else:
        try:
            result = send_with_fallback(message=outgoing_for(email=email, task=task), email=email)
        except AgentError as exc:
            if exc.permanent:  # the task fails now: the dossier shows the email never left
                Email.objects.filter(id=email.id).update(status="failed", updated_at=timezone.now())
            raise
        Email.objects.filter(id=email.id).update(
            provider=result.provider, provider_message_id=result.message_id, updated_at=timezone.now()
        )
        # Events may already have moved the status on (the simulator is quick): only lift "queued".
        Email.objects.filter(id=email.id, status="queued").update(status="sent")
    details = {"provider": result.provider, "email_id": email.id}
    target = TaskStatus.IN_PROGRESS if result.awaits_events else TaskStatus.SUCCEEDED
    # A webhook may already have finished the task (delivered or bounced): then this
    # transition is illegal and the webhook's outcome stands.
    with contextlib.suppress(IllegalTransition):
        task_transition(
            task_id=task.id, to=target, actor=ACTOR, details=details, provider_id=result.message_id,
            result={"email_id": email.id, "provider": result.provider, "message_id": result.message_id},
        )  # fmt: skip
    return result


def send_with_fallback(*, message: OutgoingEmail, email: Email) -> SendResult:
    failures: list[str] = []
    chain = provider_chain()
    for name in chain:
        try:
            return get_provider(name).send(message)
        except FallbackError as exc:
            failures.append(f"{name}: {exc.message}")
            _record_local_event(
                email=email, event="provider_failed", detail={"provider": name, "error": exc.message}
            )
            log.warning(
                "email %s: %s failed (%s)%s",
                email.id,
                name,
                exc.code,
                ", trying the fallback" * (name != chain[-1]),
            )
            last = exc
    raise TransientError("; ".join(failures), code=last.code, retry_after=last.retry_after)


def _record_local_event(*, email: Email, event: str, detail: dict[str, Any]) -> None:
    EmailEvent.objects.create(
        email=email,
        event=event,
        provider_event_id=f"local:{uuid.uuid4()}",
        detail=detail,
        occurred_at=timezone.now(),
    )


# --- Delivery events (SendGrid's event webhook) -----------------------------------------

# Email status per event, and its rank: an email never goes back to a lower rank
# (events arrive unordered and are retried for 24 h).
EVENT_STATUS = {
    "processed": "processed",
    "deferred": "deferred",
    "delivered": "delivered",
    "open": "opened",
    "click": "clicked",
    "bounce": "bounced",
    "dropped": "dropped",
}
STATUS_RANK = {
    "": 0, "queued": 0, "sent": 1, "processed": 2, "deferred": 3, "delivered": 4, "opened": 5, "clicked": 6,
    "bounced": 9, "dropped": 9, "failed": 9,
}  # fmt: skip
TASK_OUTCOME = {
    "delivered": TaskStatus.SUCCEEDED,
    "open": TaskStatus.SUCCEEDED,
    "click": TaskStatus.SUCCEEDED,
    "bounce": TaskStatus.FAILED,
    "dropped": TaskStatus.FAILED,
}
OPT_OUT_EVENTS = frozenset({"unsubscribe", "group_unsubscribe", "spamreport"})
# Recorded on the email, but they change neither its status nor the task.
RECORD_ONLY_EVENTS = frozenset({"group_resubscribe"})
KNOWN_EVENTS = frozenset(EVENT_STATUS) | OPT_OUT_EVENTS | RECORD_ONLY_EVENTS


def email_apply_event(*, event: dict[str, Any], event_id: str) -> str:
    """Apply one SendGrid event (already de-duplicated); returns an outcome label."""
    name = str(event.get("event", ""))
    if name not in KNOWN_EVENTS:
        log.warning("SendGrid event %r is not one we know: stored, not applied", name)
        return f"unknown:{name}"[:64]
    email = _email_for(event)
    if email is None:
        return "unmatched"
    occurred = _when(event.get("timestamp"))
    EmailEvent.objects.create(
        email=email, event=name, provider_event_id=event_id[:200], detail=event, occurred_at=occurred
    )
    outcome = name
    status = EVENT_STATUS.get(name)
    if status and STATUS_RANK[status] > STATUS_RANK.get(email.status, 0):
        Email.objects.filter(id=email.id).update(status=status, updated_at=timezone.now())
    if name in OPT_OUT_EVENTS:
        _opt_out(email=email, event=name)
    if name == "bounce" and event.get("type", "bounce") == "bounce":
        _mark_undeliverable(email=email)
        outcome = "hard_bounce"
    # Opens and clicks keep coming after the task is final: skip the transition (and its
    # stale TaskEvent row) then, rather than record one per event.
    if name in TASK_OUTCOME and email.task_id and email.task.status not in FINAL:
        _move_task(email=email, event=event, to=TASK_OUTCOME[name])
    return outcome


def _email_for(event: dict[str, Any]) -> Email | None:
    email_id = str(event.get("email_id", ""))
    if email_id.isdigit():
        found = Email.objects.select_related("task").filter(id=int(email_id)).first()
        if found is not None:
            return found
    message_id = str(event.get("sg_message_id", "")).split(".")[0]
    if message_id:
        return (
            Email.objects.select_related("task")
            .filter(provider_message_id=message_id)
            .order_by("-id")
            .first()
        )
    return None


def _when(value: Any) -> datetime:
    try:
        return datetime.fromtimestamp(int(value), tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return timezone.now()


def _contact_ids(email: Email) -> list[Any]:
    if email.contact_id:
        return [email.contact_id]
    return list(Contact.objects.filter(email__iexact=email.to_address).values_list("id", flat=True))


def _opt_out(*, email: Email, event: str) -> None:
    for contact_id in _contact_ids(email):
        consent_set(
            contact_id=contact_id, channel="email", status=ConsentStatus.OPTED_OUT, source="webhook",
            detail=f"sendgrid {event}", actor="sendgrid",
        )  # fmt: skip


def _mark_undeliverable(*, email: Email) -> None:
    Contact.objects.filter(id__in=_contact_ids(email), email__iexact=email.to_address).update(
        email_undeliverable=True, updated_at=timezone.now()
    )


def _move_task(*, email: Email, event: dict[str, Any], to: str) -> None:
    name = event["event"]
    failure = to == TaskStatus.FAILED
    reason = str(event.get("reason") or event.get("response") or name)[:500]
    try:
        with transaction.atomic():
            task_transition(
                task_id=email.task_id, to=to, actor="webhook:sendgrid", details={"event": name, "email_id": email.id},
                error_code=f"email_{EVENT_STATUS[name]}" if failure else None,
                error_message=reason if failure else None,
            )  # fmt: skip
    except IllegalTransition:
        # Already final (a bounce after delivered, an open after a failure): the email row
        # and its events keep the detail; the task's outcome stays as it was decided.
        pass
    except Task.DoesNotExist:
        pass


def email_unsubscribe(*, token: str) -> bool:
    """One-click unsubscribe (RFC 8058) from the List-Unsubscribe URL. False when the token is bad."""
    try:
        email_id = int(signing.Signer(salt=UNSUBSCRIBE_SALT).unsign(token))
    except (signing.BadSignature, ValueError):
        return False
    email = Email.objects.filter(id=email_id).first()
    if email is None:
        return False
    _opt_out(email=email, event="list_unsubscribe")
    return True
