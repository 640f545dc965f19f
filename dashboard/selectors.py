"""Reads for the console pages; each a fixed, small number of queries."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, Prefetch, Q
from django.utils import timezone

from dashboard import adapters
from dashboard.models import InboxItem
from dossiers.models import Artifact, Call, Consent, ConsentChange, ConsentStatus, Contact, Email, Message
from orchestrator.models import AgentRegistration, Task
from orchestrator.states import TaskStatus

INBOUND_TYPES = ("sms.inbound", "whatsapp.inbound")
ACTIVE_CALL_STATUSES = (TaskStatus.DISPATCHED, TaskStatus.IN_PROGRESS)


@dataclass(frozen=True)
class TimelineEntry:
    kind: str  # message | call | email | artifact
    at: datetime
    channel: str
    direction: str
    summary: str
    status: str
    obj: Any


def contact_timeline(*, contact_id: Any, limit: int = 50) -> list[TimelineEntry]:
    """Messages, calls, emails and artifacts of a contact, newest first.

    Four indexed queries (each ``(contact, -occurred_at)``, ``limit`` rows), merged in Python.
    """
    entries: list[TimelineEntry] = []
    for m in Message.objects.filter(contact_id=contact_id).order_by("-occurred_at")[:limit]:
        entries.append(TimelineEntry("message", m.occurred_at, m.channel, m.direction, m.body, m.status, m))
    for c in Call.objects.filter(contact_id=contact_id).order_by("-occurred_at")[:limit]:
        duration = f"{c.duration_seconds}s" if c.duration_seconds is not None else ""
        summary = " ".join(p for p in (f"call {c.to_address}", duration, c.end_reason) if p)
        entries.append(TimelineEntry("call", c.occurred_at, "voice", c.direction, summary, c.status, c))
    for e in Email.objects.filter(contact_id=contact_id).order_by("-occurred_at")[:limit]:
        entries.append(TimelineEntry("email", e.occurred_at, "email", e.direction, e.subject, e.status, e))
    for a in Artifact.objects.filter(contact_id=contact_id).order_by("-occurred_at")[:limit]:
        summary = f"{a.kind} · {a.content_type} · {a.size} bytes"
        entries.append(TimelineEntry("artifact", a.occurred_at, "", "", summary, "", a))
    entries.sort(key=lambda e: e.at, reverse=True)
    return entries[:limit]


def contact_consents(*, contact_id: Any) -> list[dict[str, Any]]:
    """Each channel's consent and its history (two queries)."""
    current = {c.channel: c for c in Consent.objects.filter(contact_id=contact_id)}
    history: dict[str, list[ConsentChange]] = {}
    for change in ConsentChange.objects.filter(contact_id=contact_id).order_by("-created_at")[:200]:
        history.setdefault(change.channel, []).append(change)
    rows = []
    for channel in ("sms", "whatsapp", "voice", "email"):
        consent = current.get(channel)
        rows.append(
            {
                "channel": channel,
                "status": consent.status if consent else ConsentStatus.UNKNOWN,
                "changed_at": consent.changed_at if consent else None,
                "source": consent.source if consent else "",
                "history": history.get(channel, []),
            }
        )
    return rows


@dataclass
class InboxRow:
    item: InboxItem
    task: Task
    contact: Contact | None
    channel: str
    text: str
    opted_out: bool
    waiting_seconds: int


def inbox_rows(*, include_resolved: bool = False, limit: int = 200) -> list[InboxRow]:
    """Open conversations, oldest first, with the customer's words and the opt-out mark (3 queries)."""
    qs = InboxItem.objects.select_related("task__contact", "claimed_by").order_by("received_at")
    if not include_resolved:
        qs = qs.filter(resolved_at__isnull=True)
    items = list(qs[:limit])
    task_ids = [i.task_id for i in items]
    messages = {
        m.task_id: m
        for m in Message.objects.filter(task_id__in=task_ids, direction="inbound").order_by("occurred_at")
    }
    contact_ids = {i.task.contact_id for i in items if i.task.contact_id}
    opted_out = set(
        Consent.objects.filter(contact_id__in=contact_ids, status=ConsentStatus.OPTED_OUT).values_list(
            "contact_id", "channel"
        )
    )
    now = timezone.now()
    rows = []
    for item in items:
        task = item.task
        channel = task.type.split(".")[0]
        rows.append(
            InboxRow(
                item=item,
                task=task,
                contact=task.contact,
                channel=channel,
                text=adapters.inbound_text(task, messages.get(task.id)),
                opted_out=(task.contact_id, channel) in opted_out,
                waiting_seconds=int((now - item.received_at).total_seconds()),
            )
        )
    return rows


@dataclass
class ThreadEntry:
    direction: str
    text: str
    at: datetime
    status: str
    pending: bool
    task_id: Any = None  # an outbound message's send task: the page follows its status live


def inbox_thread(*, task: Task, limit: int = 50) -> list[ThreadEntry]:
    """The conversation on the inbound task's channel, oldest first: the contact's stored
    messages, plus replies whose send task has no stored message yet (shown as pending)."""
    channel = task.type.split(".")[0]
    if task.contact_id:
        messages = list(
            Message.objects.filter(contact_id=task.contact_id, channel=channel).order_by("-occurred_at")[
                :limit
            ]
        )
    else:
        messages = list(Message.objects.filter(task=task))
    entries = [
        ThreadEntry(
            m.direction,
            m.body,
            m.occurred_at,
            m.status,
            False,
            m.task_id if m.direction == "outbound" else None,
        )
        for m in messages
    ]
    if not messages:
        entries.append(ThreadEntry("inbound", adapters.inbound_text(task, None), task.created_at, "", False))
    stored_tasks = {m.task_id for m in messages if m.task_id}
    for reply in task.children.filter(type=f"{channel}.send").order_by("created_at")[:limit]:
        if reply.id not in stored_tasks:
            text = reply.payload.get("body") or f"template {reply.payload.get('template', '')}"
            entries.append(ThreadEntry("outbound", text, reply.created_at, reply.status, True, reply.id))
    entries.sort(key=lambda e: e.at)
    return entries


def active_calls() -> list[Task]:
    """``call.outbound`` tasks being dialled or spoken, each with its dossier Call (2 queries)."""
    return list(
        Task.objects.filter(type="call.outbound", status__in=ACTIVE_CALL_STATUSES)
        .select_related("contact")
        .prefetch_related(Prefetch("calls", queryset=Call.objects.order_by("-occurred_at")))
        .order_by("created_at")[:200]
    )


def recent_calls(*, limit: int = 20) -> list[Task]:
    return list(
        Task.objects.filter(type="call.outbound")
        .exclude(status__in=ACTIVE_CALL_STATUSES)
        .select_related("contact")
        .order_by("-created_at")[:limit]
    )


def call_for_task(*, task: Task) -> tuple[Call | None, list[Any], Artifact | None]:
    """The task's Call, its transcript turns and its recording (artifact audio)."""
    call = Call.objects.filter(task=task).select_related("recording").order_by("-occurred_at").first()
    turns = list(call.turns.order_by("sequence")) if call else []
    recording = call.recording if call and call.recording_id else None
    if recording is None:
        recording = (
            Artifact.objects.filter(task=task, content_type__startswith="audio/")
            .order_by("-occurred_at")
            .first()
        )
    return call, turns, recording


@dataclass
class AgentHealth:
    registration: AgentRegistration
    heartbeat_age: float | None
    healthy: bool
    queue_depth: int | None
    recent: int
    failed: int

    @property
    def failure_rate(self) -> float | None:
        return self.failed / self.recent if self.recent else None


def agent_health(
    *, window: timedelta = timedelta(hours=1), queue_depths: dict[str, int | None]
) -> list[AgentHealth]:
    """Each registration with its heartbeat age, queue depth and failure rate over ``window``."""
    stale = getattr(settings, "HEARTBEAT_STALE_SECONDS", 30)  # the heartbeat branch adds the setting
    since = timezone.now() - window
    counts = {
        row["type"]: row
        for row in Task.objects.filter(finished_at__gte=since)
        .exclude(contact__synthetic=True)  # smoke runs are not traffic
        .values("type")
        .annotate(
            finished=Count("id"),
            failed=Count("id", filter=Q(status__in=[TaskStatus.FAILED, TaskStatus.EXPIRED])),
        )
    }
    now = timezone.now()
    rows = []
    for reg in AgentRegistration.objects.order_by("agent", "task_type"):
        age = (now - reg.last_heartbeat_at).total_seconds() if reg.last_heartbeat_at else None
        c = counts.get(reg.task_type, {})
        rows.append(
            AgentHealth(
                registration=reg,
                heartbeat_age=age,
                healthy=reg.enabled and age is not None and age <= stale,
                queue_depth=queue_depths.get(reg.queue),
                recent=c.get("finished", 0),
                failed=c.get("failed", 0),
            )
        )
    return rows
