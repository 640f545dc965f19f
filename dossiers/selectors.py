"""Dossier reads: contacts and the merged, cursor-paginated timeline.

The timeline merges four tables (calls, messages, emails, artifacts). Each page is one
query, whatever the data: the ORM's ``union(all=True)`` of one queryset per kind, each reading
its newest rows through the ``(contact, occurred_at)`` or ``(correlation_id, occurred_at)``
index, ordered and cut at ``page_size + 1``, merged and cut again by the database. The order is
``(occurred_at, kind, id)`` descending; the cursor carries the last entry's triple, so a
page never repeats or skips an entry, even with equal timestamps across kinds.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.db import connection, models
from django.db.models import F, Q, QuerySet, Value
from django.db.models.functions import Cast
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from dossiers.models import Artifact, Call, Contact, Email, Message

PAGE_SIZE = 50
SUMMARY_CHARS = 280  # a message's summary: the start of its body
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


# One values_list() queryset per kind, all with the same columns in the same order (model
# fields where the kind has one, typed constants where it has not), combined with
# union(all=True): the page is one statement. The order-by columns carry the same alias in every
# kind (``tl_*``, none colliding with a model field), since a compound statement is ordered by
# its first part's names.
_TEXT, _INT, _UUID = models.TextField(), models.BigIntegerField(), models.UUIDField()


def _text(value: str = "") -> Value:
    return Value(value, output_field=_TEXT)


def _null(field: models.Field) -> Cast:
    """A typed NULL: PostgreSQL types an untyped NULL of a compound's first parts as text."""
    return Cast(Value(None), field)


# kind, n, at | contact, task, correlation, channel, direction, status, summary, from, to, media,
# ref (a uuid: html body, recording, the artifact itself), extra1, extra2, number
_SHARED = ("contact_id", "task_id", "correlation_id")
_OWN = {
    "message": ("channel", "direction", "status", "body", "from_address", "to_address", "tl_media",
                "tl_ref", "tl_extra1", "tl_extra2", "tl_number"),
    "email": ("tl_channel", "direction", "status", "subject", "from_address", "to_address", "tl_media",
              "tl_ref", "provider", "tl_extra2", "tl_number"),
    "call": ("tl_channel", "direction", "status", "tl_summary", "from_address", "to_address", "tl_media",
             "tl_ref", "answered_by", "tl_extra2", "duration_seconds"),
    "artifact": ("tl_channel", "tl_direction", "tl_status", "tl_summary", "tl_from", "tl_to", "tl_media",
                 "tl_ref", "kind", "content_type", "size"),
}  # fmt: skip
_CONSTANTS = {
    "tl_channel": {"email": _text("email"), "call": _text("voice"), "artifact": _text()},
    "tl_media": {"message": Cast("media", _TEXT)},
    "tl_ref": {
        "message": _null(_UUID),
        "email": F("html_id"),
        "call": F("recording_id"),
        "artifact": F("id"),
    },
    "tl_number": {"message": _null(_INT), "email": _null(_INT)},
}


def _annotations(kind: str) -> dict[str, Any]:
    """The ``tl_*`` columns of one kind: the order-by columns and what the kind lacks."""
    annotations = {"tl_kind": _text(kind), "tl_n": Value(0, output_field=_INT) if kind == "artifact" else F("id"),
                   "tl_at": F("occurred_at")}  # fmt: skip
    for name in _OWN[kind]:
        if name.startswith("tl_"):
            annotations[name] = _CONSTANTS.get(name, {}).get(kind, _text())
    return annotations


def _columns(kind: str) -> tuple[str, ...]:
    return ("tl_kind", "tl_n", "tl_at", *_SHARED, *_OWN[kind])


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
    return _timeline(("contact_id", _as_uuid(contact_id)), filters or TimelineFilters(), cursor, page_size)


def timeline_for_correlation(
    *, correlation_id: str, filters: TimelineFilters | None = None, cursor: str | None = None,
    page_size: int = PAGE_SIZE,
) -> TimelinePage:  # fmt: skip
    return _timeline(("correlation_id", correlation_id), filters or TimelineFilters(), cursor, page_size)


def _as_uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def _timeline(
    scope: tuple[str, Any], filters: TimelineFilters, cursor: str | None, page_size: int
) -> TimelinePage:
    page_size = max(1, min(page_size, MAX_PAGE_SIZE))
    after = Cursor.decode(cursor) if cursor else None
    kinds = [k for k in KINDS if _kind_applies(k, filters)]
    if not kinds:
        return TimelinePage(entries=[], next_cursor=None, queries=0, kinds_read=[])
    if len(kinds) == 1:  # one kind: its own order is the page's order
        rows = list(_kind_rows(kinds[0], scope, filters, after, page_size + 1, compound=False))
    else:
        parts = [_kind_rows(kind, scope, filters, after, page_size + 1, compound=True) for kind in kinds]
        page = parts[0].union(*parts[1:], all=True).order_by("-tl_at", "-tl_kind", "-tl_n", "-tl_ref")
        rows = list(page[: page_size + 1])
    entries = [_entry(row) for row in rows[:page_size]]
    next_cursor = None
    if len(rows) > page_size:
        last = entries[-1]
        next_cursor = Cursor(last["occurred_at"], last["kind"], str(last["id"])).encode()
    return TimelinePage(entries=entries, next_cursor=next_cursor, queries=1, kinds_read=kinds)


def _kind_applies(kind: str, filters: TimelineFilters) -> bool:
    if filters.kinds and kind not in filters.kinds:
        return False
    if kind == "artifact":  # artifacts have neither a channel nor a direction
        return not filters.channels and not filters.directions
    if filters.channels:
        wanted = {"message": {"sms", "whatsapp"}, "email": {"email"}, "call": {"voice"}}[kind]
        return bool(wanted & set(filters.channels))
    return True


def _kind_rows(
    kind: str, scope: tuple[str, Any], filters: TimelineFilters, after: Cursor | None, limit: int,
    *, compound: bool,
) -> QuerySet:  # fmt: skip
    """The newest ``limit`` rows of one kind, through its (scope, occurred_at) index, as
    ``_columns`` tuples. Where the database cannot order and cut inside a compound statement
    (SQLite), the cut moves into an ``id IN (…)`` subquery: still one statement per page."""
    column, value = scope
    where = Q(**{column: value})
    if kind == "message" and filters.channels:
        where &= Q(channel__in=[c for c in filters.channels if c in ("sms", "whatsapp")])
    if kind != "artifact" and filters.directions:
        where &= Q(direction__in=filters.directions)
    if filters.since:
        where &= Q(occurred_at__gte=filters.since)
    if filters.until:
        where &= Q(occurred_at__lt=filters.until)
    if after is not None:
        where &= _after(kind, after)
    if compound and not connection.features.supports_slicing_ordering_in_compound:
        newest = _MODELS[kind].objects.filter(where).order_by("-occurred_at", "-id").values("id")[:limit]
        return _shaped(kind).filter(id__in=newest)
    return _shaped(kind).filter(where).order_by("-occurred_at", "-id")[:limit]


@functools.cache
def _shaped(kind: str) -> QuerySet:
    """One kind's rows as ``_columns`` tuples: built once (annotating costs more than filtering);
    every page filters, orders and cuts a clone of it."""
    return _MODELS[kind].objects.annotate(**_annotations(kind)).values_list(*_columns(kind))


def _after(kind: str, cursor: Cursor) -> Q:
    """Rows that come after the cursor in (occurred_at, kind, id) descending order."""
    at = cursor.occurred_at
    if kind < cursor.kind:  # same timestamp sorts after the cursor's kind
        return Q(occurred_at__lte=at)
    if kind > cursor.kind:
        return Q(occurred_at__lt=at)
    try:
        key = uuid.UUID(cursor.id) if kind == "artifact" else int(cursor.id)
    except ValueError:
        raise InvalidCursor("The cursor is not one this API issued.") from None
    return Q(occurred_at__lt=at) | Q(occurred_at=at, id__lt=key)


def _py_datetime(value: Any) -> datetime:
    """Raw cursors on SQLite return text; PostgreSQL returns aware datetimes."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value
    if isinstance(value, str):
        value = parse_datetime(value)
    return value if timezone.is_aware(value) else timezone.make_aware(value, UTC)


def _py_uuid(value: Any) -> uuid.UUID | None:
    if value is None or isinstance(value, uuid.UUID):
        return value
    return uuid.UUID(value) if value else None


def _entry(row: tuple) -> dict[str, Any]:
    """One timeline entry (a row in ``_columns`` order): what every kind shares, plus its own
    details and the ids of its artifacts."""
    (kind, n, occurred_at, contact_id, task_id, correlation_id, channel, direction, status, summary,
     from_address, to_address, media, ref, extra1, extra2, number) = row  # fmt: skip
    entry = {
        "kind": kind,
        "id": _py_uuid(ref) if kind == "artifact" else n,
        "occurred_at": _py_datetime(occurred_at),
        "contact": _py_uuid(contact_id),
        "task": _py_uuid(task_id),
        "correlation_id": correlation_id,
        "channel": channel,
        "direction": direction,
        "status": status,
    }
    if kind == "artifact":
        entry["summary"] = f"{extra1} ({extra2}, {number} bytes)"
        entry["artifact_ids"] = [entry["id"]]
        return entry
    entry["from"], entry["to"] = from_address, to_address
    if kind == "message":
        entry["summary"] = summary[:SUMMARY_CHARS]
        media = json.loads(media) if media and media != "[]" else []
        entry["artifact_ids"] = [
            _py_uuid(m["artifact"]) for m in media if isinstance(m, dict) and m.get("artifact")
        ]
    elif kind == "email":
        entry["summary"], entry["provider"] = summary, extra1
        entry["artifact_ids"] = [_py_uuid(ref)] if ref else []
    else:
        entry["summary"] = f"{status or 'call'} {number or 0}s"
        entry["answered_by"] = extra1
        entry["artifact_ids"] = [_py_uuid(ref)] if ref else []
    return entry
