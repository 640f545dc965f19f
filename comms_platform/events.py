"""The platform's event bus: a neutral leaf every app may publish to.

A writer (the orchestrator's transition code, a dossier service) calls ``publish`` inside the
transaction that writes the row the event is about; each registered sink is called there too,
so what a sink writes (the outbound webhooks' outbox rows) commits or rolls back with the
fact itself. Sinks schedule their slow work (HTTP deliveries) with ``transaction.on_commit``.

``publish_many`` hands a batch of events to each sink in one call (one query per sink, not
one per event). This module imports no app: apps register their sinks in ``AppConfig.ready``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.utils import timezone

# The event types the platform publishes (docs/webhooks.md shows each one's payload).
EVENT_TYPES: tuple[str, ...] = (
    "task.succeeded",
    "task.failed",
    "message.delivered",
    "message.failed",
    "message.received",
    "call.completed",
    "call.transcript.ready",
    "email.delivered",
    "email.bounced",
    "email.opened",
    "contact.opted_out",
)


@dataclass(frozen=True)
class Event:
    type: str
    data: dict[str, Any]
    # The API client whose task this is about (``key:<id>``), or "" for events no client owns
    # (an inbound message, an opt-out): only endpoints allowed to see every task get those.
    source: str = ""
    # The task it is about, when there is one: a sink finds the task's owner from it.
    task_id: str = ""
    # The task's one-off callback URL when the publisher has the task at hand (task.*);
    # for other events with a task_id the sink looks it up.
    callback_url: str | None = None
    at: datetime = field(default_factory=timezone.now)


Sink = Callable[[Sequence[Event]], None]
_sinks: list[Sink] = []


def register_sink(sink: Sink) -> None:
    if sink not in _sinks:
        _sinks.append(sink)


def unregister_sink(sink: Sink) -> None:
    if sink in _sinks:
        _sinks.remove(sink)


def publish(
    event_type: str,
    data: dict[str, Any],
    *,
    source: str = "",
    task_id: Any = None,
    callback_url: str | None = None,
) -> None:
    """Publish one event (inside the writer's transaction)."""
    publish_many([Event(event_type, data, source=source, task_id=str(task_id) if task_id else "",
                        callback_url=callback_url)])  # fmt: skip


def publish_many(events: Sequence[Event]) -> None:
    """Publish many events at once: each sink is called once with all of them."""
    unknown = {e.type for e in events} - set(EVENT_TYPES)
    if unknown:
        raise ValueError(f"unknown event type(s): {sorted(unknown)}")
    if not events:
        return
    for sink in list(_sinks):
        sink(events)


def publish_task_finished(task: Any) -> None:
    """``task.succeeded`` / ``task.failed`` for a task that just reached that state (the
    orchestrator's transition code calls this; the task is duck-typed: this leaf imports no app)."""
    if task.status not in ("succeeded", "failed"):
        return
    data = {
        "id": str(task.id), "type": task.type, "channel": task.channel, "status": task.status,
        "correlation_id": task.correlation_id, "provider_id": task.provider_id,
        "contact_id": str(task.contact_id) if task.contact_id else None, "result": task.result,
        "error_code": task.error_code, "error_message": task.error_message,
        "finished_at": task.finished_at.isoformat() if task.finished_at else None,
    }  # fmt: skip
    publish(f"task.{task.status}", data, source=task.source, task_id=task.id,
            callback_url=getattr(task, "callback_url", None))  # fmt: skip


def _iso(value: Any) -> str | None:
    return value.isoformat() if value else None


def _id(value: Any) -> str | None:
    return str(value) if value else None


# What each record's events carry (duck-typed rows of dossiers' Message, Call, Email).
MESSAGE_EVENT = {"delivered": "message.delivered", "read": "message.delivered", "failed": "message.failed",
                 "undelivered": "message.failed"}  # fmt: skip


def message_data(message: Any, status: str = "") -> dict[str, Any]:
    return {
        "id": message.id, "task_id": _id(message.task_id), "contact_id": _id(message.contact_id),
        "channel": message.channel, "direction": message.direction, "status": status or message.status,
        "from": message.from_address, "to": message.to_address, "body": message.body,
        "provider_sid": message.provider_sid or "", "error_code": message.error_code or "",
        "occurred_at": _iso(message.occurred_at),
    }  # fmt: skip


def publish_message_status(message: Any, status: str, code: str = "") -> None:
    """``message.delivered`` / ``message.failed`` when an outbound message reaches that status."""
    if status in MESSAGE_EVENT:
        data = message_data(message, status) | ({"error_code": code} if code else {})
        publish(MESSAGE_EVENT[status], data, task_id=message.task_id)


def call_data(call: Any) -> dict[str, Any]:
    return {
        "id": call.id, "task_id": _id(call.task_id), "contact_id": _id(call.contact_id), "status": call.status,
        "direction": getattr(call, "direction", ""), "provider_sid": call.provider_sid or "",
        "answered_by": getattr(call, "answered_by", "") or "", "duration_seconds": call.duration_seconds,
        "started_at": _iso(call.started_at), "ended_at": _iso(call.ended_at),
    }  # fmt: skip


EMAIL_EVENT = {"delivered": "email.delivered", "bounced": "email.bounced", "opened": "email.opened"}


def email_data(email: Any, event: str) -> dict[str, Any]:
    return {
        "id": email.id, "task_id": _id(email.task_id), "contact_id": _id(email.contact_id), "event": event,
        "status": email.status, "to": getattr(email, "to_address", ""), "subject": getattr(email, "subject", ""),
    }  # fmt: skip


def publish_transcript_ready(*, call_id: Any, end_reason: str) -> None:
    """``call.transcript.ready`` once a call's conversation has ended and its transcript is written."""
    publish("call.transcript.ready", {"call_id": call_id, "end_reason": end_reason})
