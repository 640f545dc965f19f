"""Status callbacks of the messaging agent: stored by the webhook, applied by ONE function,
``status_events_apply`` (a batch of stored callbacks, or one: ``status_apply``), drained by a
worker in arrival order."""

from __future__ import annotations

import functools
import logging
import time
import uuid
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from agents.common import webhook_buffer
from agents.common.status_check import StatusCheck
from agents.messaging.providers import get_provider
from agents.messaging.statuses import IGNORED, OPT_OUT_ERROR, RANK, TASK_STATUS, error_reason
from dossiers.models import ConsentStatus, Direction, Message
from dossiers.services import consent_set, messages_status_raise
from orchestrator.models import Task
from orchestrator.registry import call_hook
from orchestrator.services import Transition, task_transition_many
from orchestrator.states import IllegalTransition, TaskStatus

log = logging.getLogger(__name__)
S = TaskStatus

STATUS_KIND = "messaging_status"
TASK_KEY = "__task"  # our task id (from the callback URL), stored with the provider's fields
MESSAGE_KEY = "__message"  # a broadcast message's id (from the callback URL)
REF_KEY = "__ref"  # the broadcast's reference, handed back through messaging.statuses_applied
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
            if connection.in_atomic_block:
                transaction.on_commit(_enqueue_drain)
            else:
                # No transaction (the fast lane, a view in autocommit): queue it now, without
                # asking the database anything — a buffered callback must not need PostgreSQL.
                _enqueue_drain()
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
    """Apply the buffered and the stored, unprocessed status callbacks in arrival order.
    Returns how many were applied."""

    done = 0
    flag_cleared = False
    while True:
        taken = webhook_buffer.take(provider="twilio", kind=STATUS_KIND, count=batch)
        try:
            with transaction.atomic():
                if taken:
                    # Buffered callbacks (a Redis stream): applied, then stored with their
                    # outcomes in one INSERT; the entries acknowledged after the commit.
                    count = len(taken.rows)
                    taken.store(_apply_batch([row.payload for row in taken.rows]))
                else:
                    count = _drain_table(batch)
        except BaseException:
            taken.release()  # not acknowledged: claimed again after RECLAIM_IDLE_MS
            raise
        taken.ack()
        done += count
        if count or taken:
            continue
        if flag_cleared or not settings.REDIS_URL:
            return done
        _redis().delete(DRAIN_FLAG)
        flag_cleared = True
        time.sleep(DRAIN_GRACE_SECONDS)


def _drain_table(batch: int) -> int:
    """Callbacks stored in the table (by the view when Redis was away): applied in id order."""
    from agents.common.models import WebhookEvent

    events = list(
        WebhookEvent.objects.select_for_update(skip_locked=True)
        .filter(provider="twilio", kind=STATUS_KIND, processed_at__isnull=True)
        .order_by("id")[:batch]
    )
    outcomes = _apply_batch([record.payload for record in events])
    now = timezone.now()
    by_outcome: dict[str, list[int]] = {}
    for record, outcome in zip(events, outcomes, strict=True):
        by_outcome.setdefault(outcome[:64], []).append(record.id)
    for outcome, ids in by_outcome.items():  # a few outcomes per batch: a few UPDATEs
        WebhookEvent.objects.filter(id__in=ids).update(outcome=outcome, processed_at=now)
    return len(events)


def _apply_batch(payloads: list[dict[str, Any]]) -> list[str]:
    """Apply callbacks set-based; when something in the batch breaks that (a deadlock, a bad
    row), one at a time, each on its own, so one bad event does not block the others."""
    if not payloads:
        return []
    try:
        with transaction.atomic():
            return status_events_apply(payloads)
    except Exception:
        log.warning("status callbacks: batch failed (%d), one at a time", len(payloads), exc_info=True)
        return [_apply_one(payload) for payload in payloads]


def _apply_one(payload: dict[str, Any]) -> str:
    """One callback on its own (the fallback when a batch breaks)."""
    try:
        with transaction.atomic():
            return status_events_apply([payload])[0]
    except Exception:
        # One bad event must not block the others; it stays visible with its outcome.
        log.exception("status callback %s could not be applied", payload.get("MessageSid", "?"))
        return "error"


def _apply_stored(record) -> str:
    """One stored callback on its own."""
    return _apply_one(record.payload)


def status_apply(*, event: dict[str, str], task_id: str | None, actor: str = "webhook:twilio") -> str:
    """Apply one status callback; returns an outcome label."""
    return status_events_apply([{**event, TASK_KEY: task_id or ""}], actor=actor)[0]


def status_events_apply(events: list[dict[str, str]], *, actor: str = "webhook:twilio") -> list[str]:
    """Apply status callbacks in arrival order, set-based; one outcome label each.

    The messages in two queries (by SID, then by our task id for a callback that came before
    the SID was saved), each message's highest-ranked status of the batch applied set-based
    (``messages_status_raise``: one lock query, one UPDATE per distinct new state, under its rank
    guard), the tasks' transitions through
    ``task_transition_many`` (one lock query, one write per task, one INSERT of the events)."""
    outcomes: list[str | None] = [None] * len(events)
    parsed = _parse(events, outcomes)
    found = _messages_for(parsed)
    best: dict[
        int, tuple[Message, str, str, str, str]
    ] = {}  # message id → (message, sid, status, code, reason)
    changes: list[tuple[int, str, Transition]] = []
    refs: list[dict[str, str]] = []
    for i, event, status, sid in parsed:
        message = found(sid, event.get(TASK_KEY), event.get(MESSAGE_KEY))
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
        if event.get(REF_KEY):
            refs.append({"ref": event[REF_KEY], "status": status, "sid": sid, "code": code, "reason": reason})
        if message.task_id is None:
            outcomes[i] = status
            continue
        changes.append((i, status, _transition(message.task_id, status, sid, code, reason, actor)))
    messages_status_raise(changes=list(best.values()), rank=RANK)  # locks in id order: no deadlocks
    if refs:  # a broadcast's recipients (broadcasts/hooks.py), in the same transaction
        call_hook("messaging.statuses_applied", items=refs)
    results = task_transition_many([change for _, _, change in changes])
    for (i, status, _), result in zip(changes, results, strict=True):
        if isinstance(result, IllegalTransition):
            outcomes[i] = f"{status}:not_applied"
        elif isinstance(result, Exception):
            outcomes[i] = "error"
        else:
            outcomes[i] = status if result.applied else f"{status}:stale"
    return [outcome or "error" for outcome in outcomes]


def _parse(events: list[dict[str, str]], outcomes: list[str | None]) -> list[tuple[int, dict, str, str]]:
    parsed = []
    for i, event in enumerate(events):
        status = event.get("MessageStatus") or event.get("SmsStatus") or ""
        if status in IGNORED:
            outcomes[i] = "ignored"
        elif status not in TASK_STATUS:
            log.warning("status callback: unknown MessageStatus %r", status)
            outcomes[i] = "error"
        else:
            parsed.append((i, event, status, event.get("MessageSid") or event.get("SmsSid") or ""))
    return parsed


def _messages_for(parsed: list[tuple[int, dict, str, str]]):
    """A finder (sid, task hint) → the callback's message, after two queries at most."""
    sids = {sid for _, _, _, sid in parsed if sid}
    by_sid = {m.provider_sid: m for m in Message.objects.filter(provider_sid__in=sids)} if sids else {}
    hints = {_uuid_or_none(event.get(TASK_KEY)) for _, event, _, sid in parsed if sid not in by_sid} - {None}
    message_hints = {
        int(event[MESSAGE_KEY])
        for _, event, _, sid in parsed
        if sid not in by_sid and str(event.get(MESSAGE_KEY) or "").isdigit()
    }
    by_id = (
        {m.id: m for m in Message.objects.filter(id__in=message_hints, direction=Direction.OUTBOUND)}
        if message_hints
        else {}
    )
    by_task = (
        {
            str(m.task_id): m
            for m in Message.objects.filter(task_id__in=hints, direction=Direction.OUTBOUND).order_by("-id")
        }
        if hints
        else {}
    )

    def find(sid: str, hint: Any, message_hint: Any = None) -> Message | None:
        found = by_sid.get(sid) or by_task.get(str(_uuid_or_none(hint)))
        if found is None and str(message_hint or "").isdigit():
            found = by_id.get(int(message_hint))
        return found

    return find


def _transition(task_id: Any, status: str, sid: str, code: str, reason: str, actor: str) -> Transition:
    target = TASK_STATUS[status]
    failed = target in (S.FAILED, S.CANCELLED)
    return Transition(
        task_id=task_id, to=target, actor=actor, provider_id=sid, supersedes_failure=target == S.SUCCEEDED,
        details={"message_status": status, **({"error_code": code} if code else {})},
        result={"message_status": status} if not failed else None,
        error_code=(code or status) if failed else None, error_message=(reason or status) if failed else None,
    )  # fmt: skip


def _uuid_or_none(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value)) if value else None
    except ValueError:
        return None


class MessageStatusCheck(StatusCheck):
    """A send still in progress past its channel's age: its final callback was lost. The kit's
    status check (agents/common/status_check.py) with the messaging agent's hooks."""

    agent, noun, operation = "messaging", "message", "messages.fetch"

    def provider_sid(self, task: Task) -> str:
        if task.provider_id:
            return task.provider_id
        message = Message.objects.filter(task=task, direction=Direction.OUTBOUND).first()
        return (message.provider_sid if message else "") or ""

    def provider(self) -> Any:
        return get_provider()

    def fetch(self, provider: Any, sid: str) -> tuple[str, str]:
        return provider.fetch_status(sid)

    def is_final(self, status: str) -> bool:
        return TASK_STATUS.get(status) in (S.SUCCEEDED, S.FAILED, S.CANCELLED)

    def apply(self, task: Task, *, sid: str, status: str, detail: Any, actor: str) -> str:
        with transaction.atomic():
            return status_apply(event={"MessageSid": sid, "MessageStatus": status, "ErrorCode": detail},
                                task_id=str(task.id), actor=actor)  # fmt: skip


def status_check(*, task_id: Any) -> str:
    return MessageStatusCheck().run(task_id)
