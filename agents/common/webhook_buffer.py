"""A Redis stream in front of the webhook event table, for the busiest callbacks.

A verified callback is one ``XADD`` in the web process (no database statement, no commit). The
worker that applies callbacks reads them in batches (one drain per stream at a time: a Redis
lock), leaves out the keys already stored (one query), applies the rest and inserts them with
their outcomes — one INSERT … ON CONFLICT DO NOTHING per batch, no UPDATE afterwards — in one
transaction, and acknowledges the stream entries only after that commit.

Nothing is lost on a crash: an entry read by a worker that dies before its commit stays pending in
the consumer group and is claimed again (``XAUTOCLAIM``) after ``RECLAIM_IDLE_MS``; one whose
worker died after the commit is read again and left out (its key is stored). When Redis is not
configured or does not answer, ``push`` returns False and the view stores the event in the table
itself, as it always did.

Redis is the Celery broker already: a buffered callback is as durable as a queued task.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import socket
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import DataError, IntegrityError, transaction
from django.utils import timezone

from agents.common.models import WebhookEvent

log = logging.getLogger(__name__)

GROUP = "drain"
RECLAIM_IDLE_MS = 30_000  # an entry read this long ago and not acknowledged: its worker died
LOCK_SECONDS = 30  # one drain reads a stream at a time; a lost drain's lock runs out
PREFIX = "webhooks:buffer:"


def stream(provider: str, kind: str) -> str:
    return f"{PREFIX}{provider}:{kind}"


@functools.lru_cache(maxsize=4)
def _client(url: str):
    import redis

    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


def client():
    return _client(settings.REDIS_URL)


@functools.cache
def _consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def push(*, provider: str, kind: str, dedupe_key: str, payload: dict[str, Any]) -> bool:
    """Buffer one verified event; False when there is no Redis to buffer in (store it yourself)."""
    if not settings.REDIS_URL:
        return False
    try:
        client().xadd(
            stream(provider, kind), {"k": dedupe_key, "p": json.dumps(payload, separators=(",", ":"))}
        )
    except Exception as exc:  # redis.RedisError, or the connection refused
        log.warning("webhook buffer unavailable (%s): storing in the table", type(exc).__name__)
        return False
    return True


@dataclass
class Taken:
    """Buffered events read from the stream, not yet stored: ``rows`` are the new ones (unsaved
    ``WebhookEvent``s; a key already stored, or twice in the batch, is left out). The caller
    applies them, ``store``s them with their outcomes in its transaction, and ``ack``s after the
    commit — or ``release``s when it fails (the entries are then claimed again)."""

    provider: str
    kind: str
    ids: list[bytes] = field(default_factory=list)
    rows: list[WebhookEvent] = field(default_factory=list)
    locked: bool = False

    def __len__(self) -> int:
        return len(self.ids)

    def store(self, outcomes: list[str]) -> None:
        """Insert the rows, applied, with their outcomes: one INSERT (no UPDATE afterwards)."""
        now = timezone.now()
        for row, outcome in zip(self.rows, outcomes, strict=True):
            row.outcome, row.processed_at = outcome[:64], now
        _store(self.rows)

    def ack(self) -> None:
        if self.ids:
            name = stream(self.provider, self.kind)
            try:
                pipe = client().pipeline(transaction=False)
                pipe.xack(name, GROUP, *self.ids)
                pipe.xdel(name, *self.ids)
                pipe.execute()
            except Exception as exc:
                # Stored already: a later claim reads them again, and the stored key leaves them out.
                log.warning(
                    "webhook buffer: %d entries not acknowledged (%s)", len(self.ids), type(exc).__name__
                )
        self.release()

    def release(self) -> None:
        if self.locked:
            self.locked = False
            with contextlib.suppress(Exception):
                client().delete(_lock(self.provider, self.kind))


def _lock(provider: str, kind: str) -> str:
    return f"{stream(provider, kind)}:draining"


def take(*, provider: str, kind: str, count: int) -> Taken:
    """Up to ``count`` buffered events, the ones not stored yet as unsaved rows (one query for
    the keys already stored). One drain at a time reads a stream (a Redis lock, LOCK_SECONDS):
    two drains holding copies of one callback must not both apply it. Another drain holding the
    lock: nothing is taken (that drain goes on until the stream is empty)."""
    taken = Taken(provider, kind)
    if not settings.REDIS_URL:
        return taken
    try:
        if not client().set(_lock(provider, kind), _consumer(), nx=True, ex=LOCK_SECONDS):
            return taken
        taken.locked = True
        entries = _read(stream(provider, kind), count)
    except Exception as exc:
        taken.release()
        log.warning("webhook buffer not read (%s): the periodic drain tries again", type(exc).__name__)
        return taken
    keyed: dict[str, WebhookEvent] = {}
    for entry_id, fields in entries:
        taken.ids.append(entry_id)
        try:
            payload = json.loads(fields[b"p"])
            key = fields[b"k"].decode()
        except (KeyError, ValueError):
            log.error("webhook buffer: unreadable entry %s dropped", entry_id)
            continue
        keyed.setdefault(key, WebhookEvent(provider=provider, kind=kind, dedupe_key=key, payload=payload))
    if keyed:
        try:
            stored = set(
                WebhookEvent.objects.filter(provider=provider, dedupe_key__in=list(keyed)).values_list(
                    "dedupe_key", flat=True
                )
            )
        except BaseException:
            taken.release()  # the database is away: another drain may try at once, not in 30 s
            raise
        taken.rows = [row for key, row in keyed.items() if key not in stored]
    return taken


def _read(name: str, count: int) -> list[tuple[bytes, dict[bytes, bytes]]]:
    import redis

    r = client()
    try:
        found = r.xreadgroup(GROUP, _consumer(), {name: ">"}, count=count)
    except redis.ResponseError as exc:
        if "NOGROUP" not in str(exc):
            raise
        try:
            r.xgroup_create(name, GROUP, id="0", mkstream=True)
        except redis.ResponseError as again:
            if "BUSYGROUP" not in str(again):
                raise
        found = r.xreadgroup(GROUP, _consumer(), {name: ">"}, count=count)
    entries = found[0][1] if found else []
    if not entries:
        # Nothing new: take over what a dead worker read and never acknowledged.
        claimed = r.xautoclaim(
            name, GROUP, _consumer(), min_idle_time=RECLAIM_IDLE_MS, start_id="0-0", count=count
        )
        entries = claimed[1]
    return [(entry_id, fields) for entry_id, fields in entries if fields]


def _store(rows: list[WebhookEvent]) -> None:
    """One INSERT for the batch; a duplicate dedupe key is skipped. A row the database refuses
    (DataError) must not sink the batch: then one at a time, a refused one kept as rejected."""
    try:
        with transaction.atomic():
            WebhookEvent.objects.bulk_create(rows, ignore_conflicts=True)
        return
    except DataError:
        log.warning("webhook buffer: the batch was refused, storing one at a time")
    for row in rows:
        try:
            with transaction.atomic():
                WebhookEvent.objects.bulk_create([row], ignore_conflicts=True)
        except (DataError, IntegrityError) as exc:
            from agents.common.webhooks import _storable

            row.payload = _storable(row.payload)
            row.outcome, row.processed_at = f"rejected: {type(exc).__name__}"[:64], timezone.now()
            try:
                with transaction.atomic():
                    WebhookEvent.objects.bulk_create([row], ignore_conflicts=True)
            except DataError:
                log.error("webhook buffer: event %s could not be stored at all", row.dedupe_key[:64])


def pending(provider: str, kind: str) -> int:
    """Entries buffered and not yet stored (the stream's length): for health and the tests."""
    if not settings.REDIS_URL:
        return 0
    return int(client().xlen(stream(provider, kind)))
