"""Messaging services: the send pipeline, status callbacks, inbound messages.

Keyword-only and typed; handlers and webhook views call these.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from agents.messaging import bodies, segments
from agents.messaging.models import InboundItem, SendAttempt
from agents.messaging.providers import get_provider
from agents.messaging.providers.base import OutboundMessage
from agents.messaging.statuses import IGNORED, OPT_OUT_ERROR, RANK, TASK_STATUS, error_reason
from comms_platform import events, ratelimit
from comms_platform.pgbackend.base import execute_prepared
from comms_platform.pgbackend.rows import db_value, insert_row
from dossiers.models import ConsentStatus, Contact, Direction, Message
from dossiers.services import (
    InvalidPhoneNumber,
    consent_set,
    consent_status,
    contact_get_or_create_by_phone,
    normalize_phone,
)
from dossiers.signals import interaction_recorded_notify
from orchestrator.errors import PermanentError, TransientError
from orchestrator.live import publish_inbox_update
from orchestrator.models import Task
from orchestrator.services import Transition, task_create, task_transition, task_transition_many
from orchestrator.states import IllegalTransition, TaskStatus

log = logging.getLogger(__name__)
S = TaskStatus
STATUS_PATH = "/webhooks/twilio/messaging/status/"
WHATSAPP_WINDOW = timedelta(hours=24)
# Waiting for a rate-limit token this long inside the worker beats a retry round trip.
MAX_INLINE_WAIT_SECONDS = 5.0


def status_callback_url(task_id: Any) -> str:
    # The task id in the query lets a callback find its task even when the worker died
    # before saving the SID; the fragment asks Twilio to retry callbacks that meet a 5xx.
    return f"{settings.PUBLIC_BASE_URL}{STATUS_PATH}?task={task_id}{settings.TWILIO_STATUS_CALLBACK_OVERRIDE}"


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


def _contact_for(task: Task, phone: str) -> tuple[Contact, bool]:
    """The task's contact, found or created by the number; True when it was just created."""
    if task.contact_id:
        return task.contact, False
    contact, created = contact_get_or_create_by_phone(phone=phone)
    execute_prepared(
        connection, _SET_CONTACT, [db_value(Task, "contact", contact.id), db_value(Task, "id", task.id)]
    )
    task.contact = contact
    return contact, created


_SET_CONTACT = 'UPDATE "orchestrator_task" SET "contact_id" = %s WHERE "id" = %s AND "contact_id" IS NULL'


def _check_window(contact: Contact, rendered: bodies.Rendered) -> None:
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


def _rate_limit(task: Task, sender: str) -> None:
    wait = ratelimit.acquire(f"messaging:{sender}", rate=float(settings.MESSAGING_RATE_PER_SECOND))
    if wait > MAX_INLINE_WAIT_SECONDS:
        # Waiting for the sender's turn is not a failed attempt: give the attempt back, so a
        # long queue behind a slow sender is deferred, never dead-lettered.
        Task.objects.filter(id=task.id, attempts__gt=0).update(attempts=F("attempts") - 1)
        task.attempts = max(0, task.attempts - 1)
        raise TransientError(
            f"rate limit of {sender}: next slot in {wait:.1f}s", code="rate_limited", retry_after=wait
        )
    if wait > 0:
        time.sleep(wait)
        _rate_limit(task, sender)


def message_send(*, task: Task, channel: str) -> None:
    """Send the task's message (the handler of sms.send / whatsapp.send)."""
    payload = task.payload
    try:
        phone = normalize_phone(payload.get("to") or "")
    except InvalidPhoneNumber as exc:
        # Intake checks the number; a task made another way (admin, a chain) fails here at
        # once, as Twilio's 21211 would, instead of being retried until it dead-letters.
        raise PermanentError(str(exc), code="invalid_number") from None
    contact, created = _contact_for(task, phone)
    # A contact created a moment ago has no consent record to look up (a campaign's usual case).
    if not created and consent_status(contact_id=contact.id, channel=channel) == ConsentStatus.OPTED_OUT:
        raise PermanentError(f"the contact opted out of {channel}", code="opted_out")
    if _reconcile(task=task):
        return
    try:
        rendered = bodies.build(payload=payload, channel=channel, contact=contact)
    except bodies.BodyError as exc:
        raise PermanentError(str(exc), code="invalid_body") from None
    info = _check_body(rendered, channel)
    if channel == "whatsapp":
        _check_window(contact, rendered)
    from_, service = _sender(channel)
    to = f"whatsapp:{phone}" if channel == "whatsapp" else phone
    # Paced before anything is written: a send that waits for its sender's turn (and comes
    # back as a retry with its attempt given back) writes one dossier message, not one per wait.
    _rate_limit(task, from_ or service)
    message = _dossier_message(task, contact, channel, from_ or service, to, rendered.text, info)
    outbound = OutboundMessage(
        to=to, body=rendered.text, status_callback=status_callback_url(task.id), from_=from_,
        messaging_service_sid=service, media_urls=list(payload.get("media_url") or []),
        content_sid=rendered.content_sid, content_variables=rendered.content_variables,
    )  # fmt: skip
    _call_provider(task=task, message=message, outbound=outbound)


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


def _dossier_message(task, contact, channel, from_, to, text, info) -> Message:
    """The task's outbound message: created on the first attempt, rewritten on a retry (the
    claim's lease keeps one worker on a task, so no lock is needed)."""
    fields = {
        "contact": contact, "correlation_id": task.correlation_id, "channel": channel,
        "from_address": from_, "to_address": to, "body": text, "status": "pending",
        "segments": info.segments if info else 1, "encoding": info.encoding if info else "",
        "occurred_at": timezone.now(),
    }  # fmt: skip
    # An attempt's row is written by that attempt: the first one has nothing to look up.
    message = (
        None
        if task.attempts <= 1
        else Message.objects.filter(task=task, direction=Direction.OUTBOUND).first()
    )
    if message is None:
        message = Message(task=task, direction=Direction.OUTBOUND, **fields)
        insert_row(message)
        interaction_recorded_notify(kind="message", object_id=message.id, contact_id=contact.id, channel=channel,
                                    direction="outbound", task_id=task.id, occurred_at=message.occurred_at)  # fmt: skip
        return message
    for name, value in fields.items():
        setattr(message, name, value)
    message.save(update_fields=[*fields, "updated_at"])
    return message


def _call_provider(*, task: Task, message: Message, outbound: OutboundMessage) -> None:
    provider = get_provider()
    # The attempt row is committed BEFORE the call: if this worker dies after Twilio
    # accepted but before we saved the SID, the next claim finds it "started" and
    # reconciles instead of sending a second message blindly.
    attempt = SendAttempt(task=task, number=task.attempts)
    insert_row(attempt)
    try:
        result = provider.send(outbound)
    except (TransientError, PermanentError) as exc:
        if getattr(exc, "maybe_sent", False):
            # No answer after the request left: the next attempt asks Twilio before sending.
            SendAttempt.objects.filter(id=attempt.id).update(detail=f"no answer: {exc.message}"[:300])
            raise
        _finish_attempt(attempt, SendAttempt.Outcome.RETRY if not exc.permanent else SendAttempt.Outcome.REFUSED,
                        detail=exc.message)  # fmt: skip
        _after_refusal(task=task, message=message, exc=exc)
        raise
    _accepted(task=task, message=message, attempt=attempt, sid=result.sid, status=result.status,
              via=provider.name)  # fmt: skip


def _after_refusal(*, task: Task, message: Message, exc: Exception) -> None:
    code = getattr(exc, "code", "")
    Message.objects.filter(id=message.id).update(status="failed", error_code=str(code)[:16],
                                                 error_message=str(exc)[:300])  # fmt: skip
    if code == OPT_OUT_ERROR and message.contact_id:
        consent_set(contact_id=message.contact_id, channel="sms", status=ConsentStatus.OPTED_OUT,
                    source="provider_error", detail=f"Twilio {code}", actor=f"agent:{task.agent or 'messaging'}")  # fmt: skip
    if not getattr(exc, "permanent", True) and task.attempts > settings.MESSAGING_MAX_RETRIES:
        raise PermanentError(f"gave up after {task.attempts} attempts: {exc}", code=str(code)) from exc


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
    the task, in one transaction of prepared statements (every send of a campaign passes here)."""
    now = timezone.now()
    with transaction.atomic():
        if attempt is not None:
            execute_prepared(
                connection, _ATTEMPT_ACCEPTED, [sid, db_value(SendAttempt, "finished_at", now), attempt.id]
            )
        # The SID unless a callback put it there first, the status unless a callback
        # already moved the message on.
        execute_prepared(
            connection, _MESSAGE_ACCEPTED, [sid, status, db_value(Message, "updated_at", now), message.id]
        )
        (outcome,) = task_transition_many(
            [Transition(task_id=task.id, to=S.IN_PROGRESS, actor=f"agent:{task.agent or 'messaging'}",
                        provider_id=sid, details={"provider": via, "sid": sid, "status": status})]
        )  # fmt: skip
        if isinstance(outcome, Task.DoesNotExist):
            raise outcome
        if isinstance(outcome, IllegalTransition) or not outcome.applied:
            # A fast callback finished the task already: keep the SID on it anyway.
            Task.objects.filter(id=task.id, provider_id="").update(provider_id=sid)


_ATTEMPT_ACCEPTED = (
    'UPDATE "messaging_sendattempt" SET "outcome" = \'accepted\', "provider_sid" = %s, "detail" = \'\', '
    '"finished_at" = %s WHERE "id" = %s'
)
_MESSAGE_ACCEPTED = (
    'UPDATE "dossiers_message" SET "provider_sid" = COALESCE("provider_sid", %s), '
    '"status" = CASE WHEN "status" = \'pending\' THEN %s ELSE "status" END, "updated_at" = %s WHERE "id" = %s'
)


def _reconcile(*, task: Task) -> bool:
    """True when an earlier attempt of this task already reached Twilio (nothing to send)."""
    if task.attempts <= 1:
        return False  # the first attempt: there is no earlier one (attempt rows carry the count)
    open_attempt = task.send_attempts.filter(outcome=SendAttempt.Outcome.STARTED).order_by("-number").first()
    if open_attempt is None:
        return False
    message = Message.objects.filter(task=task, direction=Direction.OUTBOUND).first()
    sid = message.provider_sid if message and message.provider_sid else None  # set by a callback
    if sid is None and message is not None:
        sid = get_provider().find_recent(
            to=message.to_address, since=open_attempt.started_at, body=message.body
        )
    if sid is None:
        _finish_attempt(
            open_attempt, SendAttempt.Outcome.RETRY, detail="worker lost; Twilio has no such message"
        )
        return False
    _finish_attempt(
        open_attempt, SendAttempt.Outcome.ACCEPTED, sid=sid, detail="recovered after a lost worker"
    )
    _accepted(task=task, message=message, attempt=None, sid=sid, status=message.status or "queued",
              via="reconciled")  # fmt: skip
    return True


# --- Status callbacks --------------------------------------------------------------------

STATUS_KIND = "messaging_status"
TASK_KEY = "__task"  # our task id (from the callback URL), stored with the provider's fields
DRAIN_FLAG = "messaging:status-drain-scheduled"
DRAIN_BATCH = 200
DRAIN_FLAG_SECONDS = 5
FLAG_TRUST_SECONDS = 0.05
DRAIN_GRACE_SECONDS = 0.2  # > FLAG_TRUST_SECONDS: see status_drain_schedule
_flag_seen_at = -1.0


def status_drain_schedule() -> None:
    """Ask a worker to apply the stored status callbacks; at most one request in flight.

    The flag is cleared by the drain before its last look at the table, so an event
    stored after that look always schedules a new drain (none is left behind). Without
    Redis (embedded default, tests) the drain runs in process, at once.
    """
    global _flag_seen_at
    if not settings.REDIS_URL:
        status_events_drain()  # the event row is visible to this connection already
        return
    # A drain was pending a moment ago: it (or the one after it) will see this event, as
    # the drain waits DRAIN_GRACE_SECONDS after clearing the flag before its last look.
    # Saves a Redis round trip on most callbacks of a burst.
    now = time.monotonic()
    if now - _flag_seen_at < FLAG_TRUST_SECONDS:
        return
    # A short flag: if the worker draining dies, the next callback schedules a new drain after
    # DRAIN_FLAG_SECONDS (two drains at once are harmless: each takes rows with skip_locked).
    try:
        if _redis().set(DRAIN_FLAG, "1", nx=True, ex=DRAIN_FLAG_SECONDS):
            transaction.on_commit(_enqueue_drain)
    except Exception as exc:
        # Redis is away: the event is stored (the row is the outbox) and beat's periodic drain
        # (STATUS_DRAIN_INTERVAL_SECONDS) applies it once Redis is back. The callback is a 2xx.
        log.warning("status drain not scheduled (%s): the periodic drain applies it", type(exc).__name__)
        return
    _flag_seen_at = now


def _enqueue_drain() -> None:
    from agents.messaging.tasks import drain_status_events

    try:
        drain_status_events.apply_async(queue="messaging")
    except Exception as exc:
        log.warning("status drain not queued (%s): the periodic drain applies it", type(exc).__name__)


def _redis():
    return _redis_for(settings.REDIS_URL)


@functools.lru_cache(maxsize=4)
def _redis_for(url: str):
    import redis

    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


def status_events_drain(*, batch: int = DRAIN_BATCH) -> int:
    """Apply stored, unprocessed status callbacks in arrival order. Returns how many."""
    from agents.common.models import WebhookEvent

    done = 0
    flag_cleared = False
    while True:
        with transaction.atomic():
            events = list(
                WebhookEvent.objects.select_for_update(skip_locked=True)
                .filter(provider="twilio", kind=STATUS_KIND, processed_at__isnull=True)
                .order_by("id")[:batch]
            )
            try:
                with transaction.atomic():
                    outcomes = _apply_batch(events)
            except Exception:
                # Something in the batch broke the set-based path (a deadlock, a bad row): apply
                # the batch one event at a time, each on its own, as before.
                log.warning("status callbacks %s…: batch failed, one at a time", events[0].id, exc_info=True)
                outcomes = [_apply_stored(record) for record in events]
            now = timezone.now()
            for record, outcome in zip(events, outcomes, strict=True):
                record.outcome = outcome[:64]
                record.processed_at = now
            WebhookEvent.objects.bulk_update(events, ["outcome", "processed_at"])
        done += len(events)
        if events:
            continue
        if flag_cleared or not settings.REDIS_URL:
            return done
        _redis().delete(DRAIN_FLAG)
        flag_cleared = True
        time.sleep(DRAIN_GRACE_SECONDS)


def _apply_batch(records: list) -> list[str]:
    """``status_apply`` for a batch of stored callbacks, in arrival order, set-based: the
    messages in two queries, one UPDATE per message (its highest-ranked status of the batch,
    under the same rank guard), the tasks' transitions through ``task_transition_many`` (one
    lock query, one write per task, one INSERT of the events). The same records and
    outcomes as applying them one by one; one event per callback."""
    outcomes: list[str | None] = [None] * len(records)
    parsed: list[tuple[int, dict[str, str], str, str]] = []
    for i, record in enumerate(records):
        event = record.payload
        status = event.get("MessageStatus") or event.get("SmsStatus") or ""
        if status in IGNORED:
            outcomes[i] = "ignored"
        elif status not in TASK_STATUS:
            log.warning("status callback %s: unknown MessageStatus %r", record.id, status)
            outcomes[i] = "error"
        else:
            parsed.append((i, event, status, event.get("MessageSid") or event.get("SmsSid") or ""))
    by_sid = {
        m.provider_sid: m for m in Message.objects.filter(provider_sid__in={p[3] for p in parsed if p[3]})
    }
    hints = {_uuid_or_none(event.get(TASK_KEY)) for _, event, _, sid in parsed if sid not in by_sid} - {None}
    by_task = {
        str(m.task_id): m
        for m in Message.objects.filter(task_id__in=hints, direction=Direction.OUTBOUND).order_by("-id")
    }
    best: dict[
        int, tuple[Message, str, str, str, str]
    ] = {}  # message id → (message, sid, status, code, reason)
    changes: list[tuple[int, str, Transition]] = []
    for i, event, status, sid in parsed:
        message = by_sid.get(sid) or by_task.get(str(_uuid_or_none(event.get(TASK_KEY))))
        if message is None:
            log.warning("status callback for unknown message %s (%s)", sid, status)
            outcomes[i] = "unknown_message"
            continue
        code = event.get("ErrorCode") or ""
        reason = error_reason(code, event.get("ErrorMessage", "")) if code else ""
        current = best.get(message.id)
        if current is None or RANK.get(status, 0) > RANK.get(current[2], 0):
            best[message.id] = (message, sid, status, code, reason)
        if code == OPT_OUT_ERROR and message.contact_id:
            consent_set(contact_id=message.contact_id, channel="sms", status=ConsentStatus.OPTED_OUT,
                        source="provider_error", detail=f"Twilio {code}", actor="webhook:twilio")  # fmt: skip
        if message.task_id is None:
            outcomes[i] = status
            continue
        target = TASK_STATUS[status]
        failed = target in (S.FAILED, S.CANCELLED)
        changes.append((i, status, Transition(
            task_id=message.task_id, to=target, actor="webhook:twilio", provider_id=sid,
            supersedes_failure=target == S.SUCCEEDED,
            details={"message_status": status, **({"error_code": code} if code else {})},
            result={"message_status": status} if not failed else None,
            error_code=(code or status) if failed else None, error_message=(reason or status) if failed else None,
        )))  # fmt: skip
    for _, (message, sid, status, code, reason) in sorted(best.items()):  # id order: no deadlocks
        _message_status(message, sid, status, code, reason)
    results = task_transition_many([change for _, _, change in changes])
    for (i, status, _), result in zip(changes, results, strict=True):
        if isinstance(result, IllegalTransition):
            outcomes[i] = f"{status}:not_applied"
        elif isinstance(result, Exception):
            outcomes[i] = "error"
        else:
            outcomes[i] = status if result.applied else f"{status}:stale"
    return [outcome or "error" for outcome in outcomes]


def _uuid_or_none(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value)) if value else None
    except ValueError:
        return None


def _apply_stored(record) -> str:
    payload = dict(record.payload)
    try:
        with transaction.atomic():
            return status_apply(event=payload, task_id=payload.get(TASK_KEY) or None)
    except Exception:
        # One bad event must not block the others; it stays visible with its outcome.
        log.exception("status callback %s could not be applied", record.id)
        return "error"


def status_apply(*, event: dict[str, str], task_id: str | None, actor: str = "webhook:twilio") -> str:
    """Apply one (new) status callback; returns an outcome label."""
    status = event.get("MessageStatus") or event.get("SmsStatus") or ""
    sid = event.get("MessageSid") or event.get("SmsSid") or ""
    if status in IGNORED:
        return "ignored"
    if status not in TASK_STATUS:
        raise ValueError(f"unknown MessageStatus {status!r}")
    message = _message_for(sid=sid, task_id=task_id)
    if message is None:
        log.warning("status callback for unknown message %s (%s)", sid, status)
        return "unknown_message"
    code = event.get("ErrorCode") or ""
    reason = error_reason(code, event.get("ErrorMessage", "")) if code else ""
    _message_status(message, sid, status, code, reason)
    if code == OPT_OUT_ERROR and message.contact_id:
        consent_set(contact_id=message.contact_id, channel="sms", status=ConsentStatus.OPTED_OUT,
                    source="provider_error", detail=f"Twilio {code}", actor="webhook:twilio")  # fmt: skip
    if message.task_id is None:
        return status
    target = TASK_STATUS[status]
    failed = target in (S.FAILED, S.CANCELLED)
    try:
        result = task_transition(
            task_id=message.task_id, to=target, actor=actor, provider_id=sid,
            supersedes_failure=target == S.SUCCEEDED,
            details={"message_status": status, **({"error_code": code} if code else {})},
            result={"message_status": status} if not failed else None,
            error_code=(code or status) if failed else None, error_message=(reason or status) if failed else None,
        )  # fmt: skip
    except IllegalTransition:
        return f"{status}:not_applied"
    return status if result.applied else f"{status}:stale"


def status_check(*, task_id: Any) -> str:
    """A send still in progress past its channel's age: its final callback was lost. Ask the
    provider and apply what it says as a callback would; fail the task when the provider has no
    such message, or still no final status after STATUS_CHECK_GIVE_UP_SECONDS."""
    from orchestrator.services import task_fail

    task = Task.objects.filter(id=task_id, status=S.IN_PROGRESS).first()
    if task is None:
        return "not_in_progress"
    message = Message.objects.filter(task=task, direction=Direction.OUTBOUND).first()
    sid = task.provider_id or (message.provider_sid if message else "") or ""
    actor = "agent:messaging (status check)"
    if not sid:
        task_fail(task_id=task.id, code="no_provider_id", actor=actor,
                  message="in progress without a provider message id: nothing to ask the provider")  # fmt: skip
        return "failed:no_provider_id"
    status, code = get_provider().fetch_status(sid)
    if status == "not_found":
        task_fail(task_id=task.id, code="not_found_at_provider", actor=actor,
                  message=f"the provider has no message {sid}")  # fmt: skip
        return "failed:not_found_at_provider"
    if TASK_STATUS.get(status) in (S.SUCCEEDED, S.FAILED, S.CANCELLED):
        with transaction.atomic():
            outcome = status_apply(event={"MessageSid": sid, "MessageStatus": status, "ErrorCode": code},
                                   task_id=str(task.id), actor=actor)  # fmt: skip
        return f"applied:{outcome}"
    if (timezone.now() - task.created_at).total_seconds() > settings.STATUS_CHECK_GIVE_UP_SECONDS:
        task_fail(task_id=task.id, code="no_final_status", actor=actor,
                  message=f"the provider still says {status!r}: no final status came")  # fmt: skip
        return "failed:no_final_status"
    return f"still:{status}"


def _message_for(*, sid: str, task_id: str | None) -> Message | None:
    # Unordered [:1], not .first(): ORDER BY id can steer PostgreSQL off the SID index.
    message = next(iter(Message.objects.filter(provider_sid=sid)[:1]), None) if sid else None
    if message is None and task_id:
        message = next(iter(Message.objects.filter(task_id=task_id, direction=Direction.OUTBOUND)[:1]), None)
    return message


def _message_status(message: Message, sid: str, status: str, code: str, reason: str) -> None:
    now = timezone.now()
    if not message.provider_sid and sid:
        Message.objects.filter(Q(provider_sid__isnull=True) | Q(provider_sid=""), id=message.id).update(
            provider_sid=sid, updated_at=now
        )
    rank = RANK.get(status, 0)
    if rank > RANK.get(message.status, 0):
        # The rank is checked again in the UPDATE itself: two callbacks applied at once
        # (e.g. sent and delivered) must not let the lower one overwrite the higher one.
        # PostgreSQL re-evaluates the WHERE on the row it waited for.
        fields: dict[str, Any] = {"status": status}
        if code:
            fields.update(error_code=code[:16], error_message=reason[:300])
        elif rank >= RANK["partially_delivered"]:
            fields.update(error_code="", error_message="")  # delivered after all: no stale error
        not_lower = [name for name, r in RANK.items() if r >= rank]
        if (
            Message.objects.filter(id=message.id)
            .exclude(status__in=not_lower)
            .update(**fields, updated_at=now)
        ):
            events.publish_message_status(message, status, code)


# --- Inbound -----------------------------------------------------------------------------

OPT_OUT = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"})
OPT_IN = frozenset({"START", "UNSTOP", "YES"})
HELP = frozenset({"HELP", "INFO"})
TRAILING = " \t\r\n.!?,;:"


def keyword_of(body: str, opt_out_type: str = "") -> str:
    """'stop', 'start', 'help' or '' — the whole body must be one keyword (Twilio's rule)."""
    if opt_out_type.upper() in ("STOP", "START", "HELP"):
        return opt_out_type.lower()
    word = (body or "").strip().rstrip(TRAILING).strip().upper()
    if word in OPT_OUT:
        return "stop"
    if word in OPT_IN:
        return "start"
    if word in HELP:
        return "help"
    return ""


def inbound_receive(*, event: dict[str, str]) -> str:
    """Store an inbound message, apply keywords, queue it for operators. Returns the reply text."""
    raw_from = event.get("From", "")
    channel = "whatsapp" if raw_from.startswith("whatsapp:") else "sms"
    phone = normalize_phone(raw_from)
    contact, _ = contact_get_or_create_by_phone(phone=phone, defaults={"name": event.get("ProfileName", "")})
    now = timezone.now()
    if channel == "whatsapp":
        Contact.objects.filter(id=contact.id).update(last_inbound_whatsapp_at=now, updated_at=now)
        Contact.objects.filter(id=contact.id, whatsapp="").update(whatsapp=f"whatsapp:{phone}")
    media = [
        {"url": event[f"MediaUrl{i}"], "content_type": event.get(f"MediaContentType{i}", "")}
        for i in range(int(event.get("NumMedia") or 0))
        if event.get(f"MediaUrl{i}")
    ]
    message = Message.objects.create(
        contact=contact, channel=channel, direction=Direction.INBOUND, from_address=raw_from,
        to_address=event.get("To", ""), body=event.get("Body", ""), media=media,
        provider_sid=event.get("MessageSid") or None, status="received",
        segments=int(event.get("NumSegments") or 1), occurred_at=now,
    )  # fmt: skip
    keyword = keyword_of(event.get("Body", ""), event.get("OptOutType", ""))
    if keyword in ("stop", "start"):
        status = ConsentStatus.OPTED_OUT if keyword == "stop" else ConsentStatus.OPTED_IN
        consent_set(contact_id=contact.id, channel=channel, status=status, source="keyword",
                    detail=(event.get("Body") or keyword).strip()[:200], actor="webhook:twilio")  # fmt: skip
    task, _ = task_create(
        type=f"{channel}.inbound", contact_id=contact.id, source="twilio",
        payload={"message_id": message.id, "from": raw_from, "body": message.body, "keyword": keyword,
                 "media": len(media)},
    )  # fmt: skip
    Message.objects.filter(id=message.id).update(task=task)
    events.publish(
        "message.received", events.message_data(message) | {"task_id": str(task.id)}, task_id=task.id
    )
    interaction_recorded_notify(kind="message", object_id=message.id, contact_id=contact.id, channel=channel,
                                direction="inbound", task_id=task.id, occurred_at=now)  # fmt: skip
    InboundItem.objects.create(task=task, message=message, contact=contact, channel=channel, received_at=now)
    # The console's inbound queue and an open conversation with this contact update at once.
    publish_inbox_update(task.id, reason="received", contact_id=contact.id)
    if media:
        transaction.on_commit(lambda: _enqueue_media_download(message.id))
    # With Advanced Opt-Out (OptOutType present) Twilio answers HELP itself.
    return settings.MESSAGING_HELP_REPLY if keyword == "help" and not event.get("OptOutType") else ""


def inbound_park(*, task: Task) -> None:
    """An inbound task waits for an operator: in progress, listed in the inbound queue."""
    task_transition(task_id=task.id, to=S.IN_PROGRESS, actor="agent:messaging",
                    details={"queue": "inbound", "waiting_for": "operator"})  # fmt: skip


def _enqueue_media_download(message_id: int) -> None:
    from agents.messaging.tasks import download_media

    try:
        download_media.apply_async(args=[message_id], queue="messaging")
    except Exception as exc:  # Redis is away: media_pending_fetch picks it up later
        log.warning("media of message %s not queued (%s): picked up later", message_id, type(exc).__name__)


def _media_missing(media: list) -> bool:
    return any(
        isinstance(item, dict) and not item.get("artifact") and item.get("pickups", 0) < MEDIA_MAX_PICKUPS
        for item in media
    )


MEDIA_MAX_PICKUPS = 10  # a media URL that keeps failing is given up after this many rounds


def media_pending_fetch(
    *, min_age_seconds: float = 30.0, window_hours: float = 48.0, limit: int = 200
) -> int:
    """Queue the download of inbound media not fetched yet (its first request was lost, or every
    retry failed): the message row is the outbox. Returns how many messages were queued."""
    now = timezone.now()
    candidates = (
        Message.objects.filter(
            direction=Direction.INBOUND,
            occurred_at__gte=now - timedelta(hours=window_hours),
            occurred_at__lte=now - timedelta(seconds=min_age_seconds),
        )
        .exclude(media=[])
        .order_by("occurred_at")
        .values_list("id", "media")
    )
    queued = 0
    for message_id, media in candidates.iterator():
        if queued >= limit or not _media_missing(media):
            continue
        for item in media:
            if isinstance(item, dict) and not item.get("artifact"):
                item["pickups"] = item.get("pickups", 0) + 1
        Message.objects.filter(id=message_id).update(media=media)
        _enqueue_media_download(message_id)
        queued += 1
    return queued


def media_download(*, message_id: int) -> int:
    """Fetch an inbound message's media with Twilio credentials; keep each as an artifact.

    The URL comes from a (signed) callback, but it is still a URL we did not write: it is
    fetched only from Twilio's hosts, credentials go only to Twilio's API host, Twilio's
    redirect to its storage is followed without them, and nothing private is reached
    (``comms_platform.outbound``). A refused URL is marked on the message, not retried."""
    from comms_platform import outbound
    from dossiers.services import artifact_store

    message = Message.objects.get(id=message_id)
    media = list(message.media)
    stored = 0
    for item in media:
        if item.get("artifact") or item.get("refused"):
            continue
        try:
            response, _ = outbound.fetch(
                item["url"], credential_hosts=outbound.twilio_credential_hosts(),
                redirect_hosts=outbound.twilio_redirect_hosts(),
                auth=(settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN), timeout=30,
            )  # fmt: skip
        except outbound.OutboundRefused as exc:
            log.warning("messaging.media_refused", extra={"message_id": message.id, "reason": str(exc)})
            item["refused"] = str(exc)
            continue
        response.raise_for_status()
        artifact = artifact_store(
            content=response.content, content_type=response.headers.get("Content-Type", item.get("content_type", "")),
            kind="media", contact_id=message.contact_id, task_id=message.task_id,
            correlation_id=message.correlation_id, source_url=item["url"],
        )  # fmt: skip
        item["artifact"] = str(artifact.id)
        stored += 1
    Message.objects.filter(id=message.id).update(media=media, updated_at=timezone.now())
    return stored
