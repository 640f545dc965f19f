"""Dossier reads: contacts and the merged, cursor-paginated timeline.

The timeline merges four tables (calls, messages, emails, artifacts). Each page is one
query, whatever the data: a UNION ALL of one SELECT per kind, each reading its newest rows
through the ``(contact, occurred_at)`` or ``(correlation_id, occurred_at)`` index with
``LIMIT page_size + 1``, merged and cut by the database. The order is
``(occurred_at, kind, id)`` descending; the cursor carries the last entry's triple, so a
page never repeats or skips an entry, even with equal timestamps across kinds.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.db import connection
from django.db.models import Q, QuerySet
from django.utils import timezone
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


# One SELECT per kind, all with the same columns, so the page is one UNION ALL statement.
# Hand-written because this is the hottest read of the console: building four ORM
# querysets costs more than running the query (bench/dossier_timeline.py measures both).
_COLUMNS = (
    "kind",
    "key",
    "n",
    "occurred_at",
    "contact_id",
    "task_id",
    "correlation_id",
    "channel",
    "direction",
    "status",
    "summary",
    "from_address",
    "to_address",
    "ref",
    "extra1",
    "extra2",
    "extra3",
)
_SELECTS = {
    "message": ["'message'", "CAST(id AS TEXT)", "id", "occurred_at", "contact_id", "task_id", "correlation_id",
                "channel", "direction", "status", "SUBSTR(body, 1, 280)", "from_address", "to_address",
                "CAST(media AS TEXT)", "''", "''", "''"],
    "email": ["'email'", "CAST(id AS TEXT)", "id", "occurred_at", "contact_id", "task_id", "correlation_id", "'email'",
              "direction", "status", "subject", "from_address", "to_address", "CAST(html_id AS TEXT)", "provider",
              "''", "''"],
    "call": ["'call'", "CAST(id AS TEXT)", "id", "occurred_at", "contact_id", "task_id", "correlation_id", "'voice'",
             "direction", "status", "''", "from_address", "to_address", "CAST(recording_id AS TEXT)", "answered_by",
             "CAST(duration_seconds AS TEXT)", "''"],
    "artifact": ["'artifact'", "CAST(id AS TEXT)", "0", "occurred_at", "contact_id", "task_id", "correlation_id", "''",
                 "''", "''", "''", "''", "''", "CAST(id AS TEXT)", "kind", "content_type", "CAST(size AS TEXT)"],
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
    contact_key = Contact._meta.pk.get_db_prep_value(_as_uuid(contact_id), connection)
    return _timeline(("contact_id", contact_key), filters or TimelineFilters(), cursor, page_size)


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
    parts, params = [], []
    for kind in kinds:
        sql, kind_params = _kind_sql(kind, scope, filters, after, page_size + 1)
        parts.append(f"SELECT * FROM ({sql}) AS {kind}_part")  # noqa: S608 (constants)
        params += kind_params
    union = " UNION ALL ".join(parts)
    sql = (
        f"SELECT * FROM ({union}) AS timeline ORDER BY occurred_at DESC, kind DESC, n DESC, key DESC LIMIT %s"  # noqa: S608
    )
    rows = _fetch(sql, [*params, page_size + 1])
    entries = [_entry(row) for row in rows[:page_size]]
    next_cursor = None
    if len(rows) > page_size:
        last = entries[-1]
        next_cursor = Cursor(last["occurred_at"], last["kind"], str(last["id"])).encode()
    return TimelinePage(entries=entries, next_cursor=next_cursor, queries=1, kinds_read=kinds)


def _fetch(sql: str, params: list[Any]) -> list[tuple]:
    """Run the page query through Django's cursor (its instrumentation and error translation).
    With ``DB_PREPARE_THRESHOLD`` set, psycopg prepares it once per connection, as every
    other repeated statement (planning the four-way UNION costs more than executing it)."""
    with connection.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall()


def _kind_applies(kind: str, filters: TimelineFilters) -> bool:
    if filters.kinds and kind not in filters.kinds:
        return False
    if kind == "artifact":  # artifacts have neither a channel nor a direction
        return not filters.channels and not filters.directions
    if filters.channels:
        wanted = {"message": {"sms", "whatsapp"}, "email": {"email"}, "call": {"voice"}}[kind]
        return bool(wanted & set(filters.channels))
    return True


def _kind_sql(
    kind: str, scope: tuple[str, Any], filters: TimelineFilters, after: Cursor | None, limit: int
) -> tuple[str, list[Any]]:
    """The newest ``limit`` rows of one kind, through its (scope, occurred_at) index."""
    column, value = scope
    where, params = [f"{column} = %s"], [value]
    if kind == "message" and filters.channels:
        channels = [c for c in filters.channels if c in ("sms", "whatsapp")]
        where.append(f"channel IN ({', '.join(['%s'] * len(channels))})")
        params += channels
    if kind != "artifact" and filters.directions:
        where.append(f"direction IN ({', '.join(['%s'] * len(filters.directions))})")
        params += list(filters.directions)
    if filters.since:
        where.append("occurred_at >= %s")
        params.append(_db_datetime(filters.since))
    if filters.until:
        where.append("occurred_at < %s")
        params.append(_db_datetime(filters.until))
    if after is not None:
        clause, after_params = _after(kind, after)
        where.append(clause)
        params += after_params
    table = connection.ops.quote_name(_MODELS[kind]._meta.db_table)
    columns = ", ".join(f"{expr} AS {name}" for expr, name in zip(_SELECTS[kind], _COLUMNS, strict=True))
    # Only constant fragments are interpolated; every value is a parameter.
    sql = f"SELECT {columns} FROM {table} WHERE {' AND '.join(where)} ORDER BY occurred_at DESC, id DESC LIMIT %s"  # noqa: S608
    return sql, [*params, limit]


def _after(kind: str, cursor: Cursor) -> tuple[str, list[Any]]:
    """Rows that come after the cursor in (occurred_at, kind, id) descending order."""
    at = _db_datetime(cursor.occurred_at)
    if kind < cursor.kind:  # same timestamp sorts after the cursor's kind
        return "occurred_at <= %s", [at]
    if kind > cursor.kind:
        return "occurred_at < %s", [at]
    try:
        key = _db_uuid(uuid.UUID(cursor.id)) if kind == "artifact" else int(cursor.id)
    except ValueError:
        raise InvalidCursor("The cursor is not one this API issued.") from None
    return "(occurred_at < %s OR (occurred_at = %s AND id < %s))", [at, at, key]


def _db_datetime(value: datetime) -> Any:
    return connection.ops.adapt_datetimefield_value(value)


def _db_uuid(value: uuid.UUID) -> Any:
    return Artifact._meta.pk.get_db_prep_value(value, connection)


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
    """One timeline entry (a row in ``_COLUMNS`` order): what every kind shares, plus its own
    details and the ids of its artifacts."""
    (kind, key, _n, occurred_at, contact_id, task_id, correlation_id, channel, direction, status, summary,
     from_address, to_address, ref, extra1, extra2, extra3) = row  # fmt: skip
    entry = {
        "kind": kind,
        "id": _py_uuid(key) if kind == "artifact" else int(key),
        "occurred_at": _py_datetime(occurred_at),
        "contact": _py_uuid(contact_id),
        "task": _py_uuid(task_id),
        "correlation_id": correlation_id,
        "channel": channel,
        "direction": direction,
        "status": status,
    }
    if kind == "artifact":
        entry["summary"] = f"{extra1} ({extra2}, {extra3} bytes)"
        entry["artifact_ids"] = [entry["id"]]
        return entry
    entry["from"], entry["to"] = from_address, to_address
    if kind == "message":
        entry["summary"] = summary
        media = json.loads(ref) if ref and ref != "[]" else []
        entry["artifact_ids"] = [
            _py_uuid(m["artifact"]) for m in media if isinstance(m, dict) and m.get("artifact")
        ]
    elif kind == "email":
        entry["summary"], entry["provider"] = summary, extra1
        entry["artifact_ids"] = [_py_uuid(ref)] if ref else []
    else:
        entry["summary"] = f"{status or 'call'} {extra2 or 0}s"
        entry["answered_by"] = extra1
        entry["artifact_ids"] = [_py_uuid(ref)] if ref else []
    return entry
