"""Reads for the console pages; each a fixed, small number of queries."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, Prefetch, Q
from django.utils import timezone

from dossiers.models import Artifact, Call, Consent, ConsentChange, ConsentStatus, Email, Message
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
