"""Dossier reads: contacts and the merged, cursor-paginated timeline.

The timeline merges four tables (calls, messages, emails, artifacts). Each page costs one
query per kind, whatever the data: every kind is read newest first through its
``(contact, occurred_at)`` or ``(correlation_id, occurred_at)`` index with
``LIMIT page_size + 1``, and the rows are merged in Python. The order is
``(occurred_at, kind, id)`` descending; the cursor carries the last entry's triple, so a
page never repeats or skips an entry, even with equal timestamps across kinds.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db.models import Q, QuerySet
from django.utils.dateparse import parse_datetime

from dossiers.models import Artifact, Call, Contact, Email, Message

PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
KINDS = ("message", "email", "call", "artifact")  # tie order: descending kind name
CHANNELS = ("sms", "whatsapp", "voice", "email")
DIRECTIONS = ("inbound", "outbound")


class InvalidCursor(ValueError):
    pass


@dataclass(frozen=True)
class Cursor:
    occurred_at: datetime
    kind: str
    id: str

    def encode(self) -> str:
        raw = json.dumps([self.occurred_at.isoformat(), self.kind, self.id], separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            when, kind, key = json.loads(raw)
            occurred_at = parse_datetime(when)
        except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
            raise InvalidCursor("The cursor is not one this API issued.") from None
        if occurred_at is None or kind not in KINDS or not isinstance(key, str):
            raise InvalidCursor("The cursor is not one this API issued.")
        return cls(occurred_at, kind, key)


@dataclass(frozen=True)
class TimelineFilters:
    channels: tuple[str, ...] = ()
    directions: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None


@dataclass
class TimelinePage:
    entries: list[dict[str, Any]]
    next_cursor: str | None
    queries: int = 0
    kinds_read: list[str] = field(default_factory=list)


# What each kind reads: only the columns an entry shows (no model instances).
_COLUMNS = {
    "message": ["id", "contact_id", "task_id", "correlation_id", "occurred_at", "channel", "direction",
                "status", "body", "from_address", "to_address", "media"],
    "email": ["id", "contact_id", "task_id", "correlation_id", "occurred_at", "direction", "status",
              "subject", "from_address", "to_address", "provider", "html_id"],
    "call": ["id", "contact_id", "task_id", "correlation_id", "occurred_at", "direction", "status",
             "from_address", "to_address", "duration_seconds", "answered_by", "recording_id"],
    "artifact": ["id", "contact_id", "task_id", "correlation_id", "occurred_at", "kind", "content_type",
                 "size"],
}  # fmt: skip
_MODELS = {"message": Message, "email": Email, "call": Call, "artifact": Artifact}


def contact_list(*, search: str = "") -> QuerySet[Contact]:
    qs = Contact.objects.order_by("-created_at", "id")
    if search:
        term = search.strip()
        qs = qs.filter(
            Q(name__icontains=term) | Q(email__icontains=term) | Q(phone__contains=term.replace(" ", ""))
        )
    return qs


def timeline_for_contact(
    *, contact_id: Any, filters: TimelineFilters | None = None, cursor: str | None = None,
    page_size: int = PAGE_SIZE,
) -> TimelinePage:  # fmt: skip
    return _timeline(Q(contact_id=contact_id), filters or TimelineFilters(), cursor, page_size)


def timeline_for_correlation(
    *, correlation_id: str, filters: TimelineFilters | None = None, cursor: str | None = None,
    page_size: int = PAGE_SIZE,
) -> TimelinePage:  # fmt: skip
    return _timeline(Q(correlation_id=correlation_id), filters or TimelineFilters(), cursor, page_size)


def _timeline(scope: Q, filters: TimelineFilters, cursor: str | None, page_size: int) -> TimelinePage:
    page_size = max(1, min(page_size, MAX_PAGE_SIZE))
    after = Cursor.decode(cursor) if cursor else None
    kinds = [k for k in KINDS if _kind_applies(k, filters)]
    streams = []
    for kind in kinds:
        rows = list(_kind_query(kind, scope, filters, after)[: page_size + 1])
        streams.append([_entry(kind, row) for row in rows])
    # Every stream is already sorted by the page order: merge instead of sorting.
    merged = list(heapq.merge(*streams, key=_sort_key, reverse=True))
    entries = merged[:page_size]
    next_cursor = None
    if len(merged) > page_size:
        last = entries[-1]
        next_cursor = Cursor(last["occurred_at"], last["kind"], str(last["id"])).encode()
    return TimelinePage(entries=entries, next_cursor=next_cursor, queries=len(kinds), kinds_read=kinds)


def _kind_applies(kind: str, filters: TimelineFilters) -> bool:
    if filters.kinds and kind not in filters.kinds:
        return False
    if kind == "artifact":  # artifacts have neither a channel nor a direction
        return not filters.channels and not filters.directions
    if filters.channels:
        wanted = {"message": {"sms", "whatsapp"}, "email": {"email"}, "call": {"voice"}}[kind]
        return bool(wanted & set(filters.channels))
    return True


def _kind_query(kind: str, scope: Q, filters: TimelineFilters, after: Cursor | None) -> QuerySet:
    qs = _MODELS[kind].objects.filter(scope)
    if kind == "message" and filters.channels:
        qs = qs.filter(channel__in=[c for c in filters.channels if c in ("sms", "whatsapp")])
    if kind != "artifact" and filters.directions:
        qs = qs.filter(direction__in=filters.directions)
    if filters.since:
        qs = qs.filter(occurred_at__gte=filters.since)
    if filters.until:
        qs = qs.filter(occurred_at__lt=filters.until)
    if after is not None:
        qs = qs.filter(_after(kind, after))
    return qs.order_by("-occurred_at", "-id").values(*_COLUMNS[kind])


def _after(kind: str, cursor: Cursor) -> Q:
    """Rows that come after the cursor in (occurred_at, kind, id) descending order."""
    if kind < cursor.kind:  # same timestamp sorts after the cursor's kind
        return Q(occurred_at__lte=cursor.occurred_at)
    if kind > cursor.kind:
        return Q(occurred_at__lt=cursor.occurred_at)
    key = uuid.UUID(cursor.id) if kind == "artifact" else int(cursor.id)
    return Q(occurred_at__lt=cursor.occurred_at) | Q(occurred_at=cursor.occurred_at, id__lt=key)


def _sort_key(entry: dict[str, Any]) -> tuple:
    key = entry["id"].int if isinstance(entry["id"], uuid.UUID) else entry["id"]
    return (entry["occurred_at"], entry["kind"], key)


def _entry(kind: str, row: dict[str, Any]) -> dict[str, Any]:
    """One timeline entry: what every kind shares, plus its own details and artifact ids."""
    entry = {
        "kind": kind,
        "id": row["id"],
        "occurred_at": row["occurred_at"],
        "contact": row["contact_id"],
        "task": row["task_id"],
        "correlation_id": row["correlation_id"],
        "channel": row.get("channel") or {"email": "email", "call": "voice"}.get(kind, ""),
        "direction": row.get("direction", ""),
        "status": row.get("status", ""),
    }
    if kind == "message":
        entry["summary"] = row["body"][:280]
        entry["from"], entry["to"] = row["from_address"], row["to_address"]
        entry["artifact_ids"] = [
            m["artifact"] for m in row["media"] or [] if isinstance(m, dict) and m.get("artifact")
        ]
    elif kind == "email":
        entry["summary"] = row["subject"]
        entry["from"], entry["to"] = row["from_address"], row["to_address"]
        entry["provider"] = row["provider"]
        entry["artifact_ids"] = [row["html_id"]] if row["html_id"] else []
    elif kind == "call":
        entry["summary"] = f"{row['status'] or 'call'} {row['duration_seconds'] or 0}s"
        entry["from"], entry["to"] = row["from_address"], row["to_address"]
        entry["answered_by"] = row["answered_by"]
        entry["artifact_ids"] = [row["recording_id"]] if row["recording_id"] else []
    else:
        entry["summary"] = f"{row['kind']} ({row['content_type']}, {row['size']} bytes)"
        entry["artifact_ids"] = [row["id"]]
    return entry
