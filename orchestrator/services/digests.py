"""Digests: the ``notify`` tasks with one ``digest.key`` for one contact, collected over a window
into one message (Novu's "regular" digest step, Knock's batch function).

The window is half-open, ``[opens_at, closes_at)``, on the platform's intake clock: an item
*arrives* when its task was accepted (``Task.created_at``), or at its ``scheduled_for`` if later. The first item opens a digest at its
arrival, for ``window_seconds``; an item that arrives before ``closes_at`` joins the digest while
it is open; an item that arrives at ``closes_at`` or later opens the next one (and flushes the
previous one at once if its flush has not run yet). An item whose digest was flushed while the
item waited in the queue joins the next digest: it is never dropped.

One row lock decides every race: joining an item and flushing a digest both lock the open
digest's row, and at most one digest per contact and key is open (a partial unique
constraint), so two items opening a digest at once agree on one. A flush is one transaction:
it creates the digest's ``notify`` task (one message through the normal routing), finishes
every item task (``succeeded``, its result naming that task), and closes the digest. An item
joining at that moment waits for the lock, then finds no open digest and opens the next one.

The flush is scheduled at ``closes_at`` (a Celery ETA message) and the sweeper flushes any due
digest whose message was lost (``digests_flush_due``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import F
from django.template import Context, Engine, TemplateSyntaxError
from django.utils import timezone

from comms_platform.db import insert_one
from orchestrator.models import Digest, DigestItem, DigestStatus, Task
from orchestrator.services.intake import UnknownTaskType, task_create
from orchestrator.services.transitions import Transition, task_transition_many
from orchestrator.states import FINAL, TaskStatus

log = logging.getLogger(__name__)

S = TaskStatus
D = DigestStatus
MAX_WINDOW_SECONDS = 7 * 24 * 3600
# Redis redelivers an unacknowledged message after the broker's visibility timeout (3600 s), and
# a worker holds an ETA message unacknowledged until it is due: a longer window would be
# delivered again every hour. Those digests are flushed by the sweeper instead (every
# TASK_SWEEP_INTERVAL_SECONDS).
ETA_MAX_SECONDS = 3000
DEFAULT_LIST_LIMIT = 20  # items listed by the default layout; the rest are counted ("and 5 more")
ACTOR = "orchestrator:digest"

# Plain-text templates with Django's built-in tags and filters, and no loader: a client's
# template cannot include or extend files of the platform.
_engine = Engine(loaders=[], autoescape=False)


def template_check(source: str) -> str | None:
    """The syntax error of a digest template, or None when it compiles."""
    try:
        _engine.from_string(source)
    except TemplateSyntaxError as exc:
        return str(exc)
    return None


# --- Joining --------------------------------------------------------------------------------


def digest_join(*, task: Task) -> Digest:
    """Put a claimed ``notify`` task carrying ``payload.digest`` into its contact's open digest
    for the key, opening one when none is open or the open one's window ended before the task
    arrived. The task moves to ``in_progress`` with ``result.digest`` naming the digest."""
    config = task.payload["digest"]
    arrived = max(task.created_at, task.scheduled_for or task.created_at)  # a scheduled item arrives when due
    while True:
        with transaction.atomic():
            digest = _open_digest_locked(task.contact_id, config["key"])
            if digest is not None and arrived >= digest.closes_at:
                _flush_locked(digest, now=timezone.now(), by="item")  # over: it goes now, unlike this item
                digest = None
            if digest is None:
                digest = _open(task, config, arrived)
                if digest is None:
                    continue  # another item opened it a moment ago: join that one, locked
            if insert_one(DigestItem(digest=digest, task=task)):
                Digest.objects.filter(id=digest.id).update(item_count=F("item_count") + 1)
                # Inside this transaction, without the savepoint task_transition would open.
                (outcome,) = task_transition_many([Transition(task_id=task.id, to=S.IN_PROGRESS, actor=ACTOR,
                                                              details={"digest": digest.id},
                                                              result={"digest": _info(digest, D.OPEN)})])  # fmt: skip
                if isinstance(outcome, Exception):
                    raise outcome
            return digest


def _open_digest_locked(contact_id: Any, key: str) -> Digest | None:
    return Digest.objects.select_for_update().filter(contact_id=contact_id, key=key, status=D.OPEN).first()


def _open(task: Task, config: dict[str, Any], arrived: datetime) -> Digest | None:
    """A new open digest from its first item, or None when another one was opened meanwhile."""
    digest = Digest(contact_id=task.contact_id, key=config["key"], opens_at=arrived,
                    closes_at=arrived + timedelta(seconds=config["window_seconds"]), config=config)  # fmt: skip
    if not insert_one(digest):  # the partial unique constraint: one open digest per contact and key
        return None
    transaction.on_commit(lambda: schedule_flush(digest_id=digest.id, closes_at=digest.closes_at))
    return digest


def schedule_flush(*, digest_id: int, closes_at: datetime) -> bool:
    """Send the flush message for ``closes_at`` (an ETA). When it cannot be sent, or the window
    is longer than a broker can hold a message, the sweeper flushes the digest when it is due."""
    from orchestrator.tasks import flush_digest

    if (closes_at - timezone.now()).total_seconds() > ETA_MAX_SECONDS:
        return False
    try:
        flush_digest.apply_async(args=[digest_id], eta=closes_at, queue="orchestrator")
    except Exception as exc:  # the broker is down: the sweep flushes it
        log.warning(
            "digest %s: flush not scheduled (%s); the sweep flushes it", digest_id, type(exc).__name__
        )
        return False
    return True


def _info(digest: Digest, status: str, **extra: Any) -> dict[str, Any]:
    return {"id": digest.id, "key": digest.key, "status": status, "opens_at": digest.opens_at.isoformat(),
            "closes_at": digest.closes_at.isoformat(), **extra}  # fmt: skip


# --- Flushing -------------------------------------------------------------------------------


def digest_flush(*, digest_id: int, now: datetime | None = None, by: str = "eta", force: bool = False) -> str:
    """Flush an open digest whose window is over (any open one with ``force``). Returns what
    happened: ``sent``, ``empty``, ``failed``, ``not_due`` or ``closed`` (flushed before)."""
    now = now or timezone.now()
    with transaction.atomic():
        digest = Digest.objects.select_for_update().filter(id=digest_id, status=D.OPEN).first()
        if digest is None:
            return "closed"
        if digest.closes_at > now and not force:
            return "not_due"
        return _flush_locked(digest, now=now, by=by)


def digests_flush_due(*, now: datetime | None = None, batch: int = 500) -> int:
    """Flush every open digest whose window is over (the sweep's safety net for a lost ETA
    message, and ``manage.py flush_digests``). Returns how many were sent."""
    now = now or timezone.now()
    due = Digest.objects.filter(status=D.OPEN, closes_at__lte=now).order_by("closes_at")
    ids = list(due.values_list("id", flat=True)[:batch])
    return sum(digest_flush(digest_id=digest_id, now=now, by="sweep") == "sent" for digest_id in ids)


def _flush_locked(digest: Digest, *, now: datetime, by: str) -> str:
    """Inside the caller's transaction, with the digest's row locked: one notify task for the
    items still waiting, each item finished, the digest closed."""
    joined = {task_id: n for n, task_id in enumerate(DigestItem.objects.filter(digest=digest).order_by("id")
                                                     .values_list("task_id", flat=True))}  # fmt: skip
    locked = Task.objects.select_for_update(of=("self",)).filter(id__in=list(joined)).order_by("id")
    # In order of arrival; items that arrived in the same microsecond, in the order they joined.
    items = sorted((t for t in locked if t.status not in FINAL), key=lambda t: (t.created_at, joined[t.id]))
    digest.flushed_at, digest.flushed_by, digest.item_count = now, by, len(items)
    if not items:  # every item was cancelled before the window ended
        digest.status = D.EMPTY
        digest.save(update_fields=["status", "flushed_at", "flushed_by", "item_count"])
        return D.EMPTY
    try:
        child, _ = task_create(type="notify", payload=message_payload(digest, items), contact_id=digest.contact_id,
                               correlation_id=items[0].correlation_id, priority=max(t.priority for t in items),
                               source="orchestrator:digest", idempotency_key=f"digest:{digest.id}")  # fmt: skip
    except UnknownTaskType as exc:
        digest.status = D.FAILED
        changes = [Transition(task_id=t.id, to=S.FAILED, actor=ACTOR, error_code="digest_not_sent",
                              error_message=f"the digest could not be sent: no enabled agent for {exc.task_type}",
                              result={"digest": _info(digest, D.FAILED)}) for t in items]  # fmt: skip
    else:
        digest.status, digest.task = D.SENT, child
        info = _info(digest, D.SENT, task=str(child.id), items=len(items))
        changes = [Transition(task_id=t.id, to=S.SUCCEEDED, actor=ACTOR, result={"digest": info},
                              details={"digest": digest.id, "task": str(child.id)}) for t in items]  # fmt: skip
    task_transition_many(changes)
    digest.save(update_fields=["status", "task", "flushed_at", "flushed_by", "item_count"])
    log.info("digest %s (%s): %s with %d item(s) by %s", digest.id, digest.key, digest.status, len(items), by)
    return digest.status


# --- The message ----------------------------------------------------------------------------


@dataclass
class Item:
    """One item as a template sees it: ``{{ item }}`` is its body."""

    body: str
    subject: str
    variables: dict[str, Any]
    task: str
    at: datetime

    def __str__(self) -> str:
        return self.body


@dataclass
class Items:
    """The items as a template sees them: ``{{ items }}`` is the default bulleted list,
    ``{% for item in items %}`` walks every one."""

    items: list[Item] = field(default_factory=list)
    limit: int = DEFAULT_LIST_LIMIT

    def __iter__(self):
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __str__(self) -> str:
        lines = [f"- {item.body}" for item in self.items[: self.limit]]
        if len(self.items) > self.limit:
            lines.append(f"… and {len(self.items) - self.limit} more")
        return "\n".join(lines)


def message_payload(digest: Digest, tasks: list[Task]) -> dict[str, Any]:
    """The digest's ``notify`` payload: the body and subject rendered from the items (the
    digest's templates, or the default layout), the first item's routing tags."""
    items = Items([_item(t) for t in tasks])
    config = digest.config
    context = {"items": items, "count": len(items), "key": digest.key}
    if config.get("body"):
        body = _render(config["body"], context)
    else:
        body = items.items[0].body if len(items) == 1 else f"{len(items)} updates:\n{items}"
    if config.get("subject"):
        subject = _render(config["subject"], context)
    else:
        subject = items.items[0].subject if len(items) == 1 else ""
        subject = subject or f"{len(items)} update{'s' if len(items) != 1 else ''}"
    payload: dict[str, Any] = {"body": body, "subject": subject.strip(),
                               "digest_of": {"id": digest.id, "key": digest.key, "items": len(items)}}  # fmt: skip
    if tags := tasks[0].payload.get("tags"):
        payload["tags"] = tags
    return payload


def _item(task: Task) -> Item:
    p = task.payload
    return Item(body=p.get("body") or p.get("text") or "", subject=p.get("subject") or "",
                variables=p.get("variables") or {}, task=str(task.id), at=task.created_at)  # fmt: skip


def _render(source: str, context: dict[str, Any]) -> str:
    return _engine.from_string(source).render(Context(context, autoescape=False)).strip()
