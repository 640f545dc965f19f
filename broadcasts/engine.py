"""The sending engine: claim a batch of recipients, apply the per-recipient rules, send the
batch through the messaging agent in one hook call, write the outcomes set-based.

The Recipient row is the unit of work (docs/broadcasts.md, "Batching design"):
1. claim: ``select_for_update(skip_locked=True)`` of up to BROADCAST_BATCH_SIZE pending rows;
   consent (opted out → ``opted_out``), quiet hours (``not_before`` set, stays pending) and the
   body are decided here; the messaging agent prepares the dossier messages
   (``messaging.batch_prepare``: WhatsApp window, body length); the rows to send become
   ``sending`` with a lease — all in one transaction, committed BEFORE any provider call;
2. send: ``messaging.batch_send`` calls the provider once per recipient,
   BROADCAST_SEND_CONCURRENCY calls at a time (agents/common/batchsend.py), and asks
   ``before_send`` first (the sender's token bucket, then the stop flag of pause / cancel /
   back-off); the first transient refusal (429 / 5xx) stops the batch and opens a back-off;
3. write: sent / failed / given back, one statement per outcome (plus one bulk_update of the
   provider ids); the back-off (``Broadcast.backoff_until``) when the batch met one.
A worker lost between 1 and 3 leaves ``sending`` rows whose lease runs out: ``reconcile`` asks
the provider (``messaging.batch_reconcile``) whether each one left, instead of sending again.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import OperationalError, transaction
from django.db.models import Case, CharField, F, Q, Value, When
from django.db.models.functions import Mod
from django.db.models.lookups import Exact
from django.utils import timezone

from broadcasts import rendering, stopflags
from broadcasts.models import Broadcast, BroadcastStatus, Channel, Recipient, RecipientStatus
from broadcasts.services import NOTIFY_ADDRESS, broadcast_finish_if_done, message_parts, notify_progress
from comms_platform import ratelimit
from comms_platform.db import ValuePerRow
from dossiers.models import Consent, ConsentStatus, Contact
from orchestrator.registry import call_hook
from orchestrator.routing import address_for, quiet_until, route_contacts

log = logging.getLogger(__name__)
B, R = BroadcastStatus, RecipientStatus
REF_PREFIX = "b:"
# The agent whose batch hooks send a channel (``<agent>.batch_prepare`` / ``batch_send`` /
# ``batch_reconcile``): broadcasts may not import agents, they call these hooks.
AGENT_OF_CHANNEL = {Channel.SMS: "messaging", Channel.WHATSAPP: "messaging", Channel.EMAIL: "email"}
DEADLOCK_RETRIES = 3


@dataclass
class Batch:
    broadcast: Broadcast | None
    items: list[dict[str, Any]] = field(default_factory=list)
    claimed: int = 0
    wait: float = 0.0  # > 0: the broadcast is backing off for this many seconds, nothing claimed
    resume_in: float | None = None  # this batch opened a back-off: resume the broadcast after it


def batch_size(broadcast: Broadcast) -> int:
    size = settings.BROADCAST_BATCH_SIZE
    if broadcast.rate_per_second:
        # A paced batch lasts about BROADCAST_PACED_BATCH_SECONDS: pause and cancel stay quick and
        # the lease stays short.
        per_second = broadcast.rate_per_second * max(1, len(broadcast.senders))
        size = min(size, max(1, int(per_second * settings.BROADCAST_PACED_BATCH_SECONDS)))
    return size


def lease_seconds(broadcast: Broadcast, size: int) -> float:
    per_second = (broadcast.rate_per_second or 0) * max(1, len(broadcast.senders))
    sending = size / per_second if per_second else 0.0
    return settings.BROADCAST_LEASE_SECONDS + 2 * sending


def batch_claim(*, broadcast_id: Any) -> Batch:
    """Claim and prepare the next batch (one transaction). Empty when nothing is claimable."""
    now = timezone.now()
    with transaction.atomic():
        broadcast = Broadcast.objects.filter(id=broadcast_id, status=B.RUNNING).first()
        if broadcast is None:
            return Batch(None)
        wait = _backoff_wait(broadcast, now)
        if wait:
            return Batch(broadcast, wait=wait)
        size = batch_size(broadcast)
        rows = list(
            Recipient.objects.select_for_update(skip_locked=True)
            .filter(broadcast_id=broadcast_id, status=R.PENDING)
            .filter(Q(not_before__isnull=True) | Q(not_before__lte=now))
            .order_by("id")[:size]
        )
        if not rows:
            return Batch(broadcast)
        rows, routed = _route(broadcast, rows)
        to_send, decided = _apply_rules(broadcast, rows, now)
        decided["skipped"].update(routed)
        items = _prepare(broadcast, to_send, decided)
        lease = now + timedelta(seconds=lease_seconds(broadcast, len(items)))
        if items:
            # One UPDATE with no per-row values (a bulk_update of 200 rows costs more CPU than the
            # sends): the sender is the round-robin of the ids, as _prepare chose it.
            Recipient.objects.filter(id__in=[i["key"] for i in items]).update(
                status=R.SENDING, lease_until=lease, attempt_started_at=now, sender=_sender_expression(broadcast, items),
                updated_at=now,
            )  # fmt: skip
            if broadcast.channel == Channel.NOTIFY:
                # Per-row values: the channel routing chose and the sender of that channel.
                Recipient.objects.bulk_update(
                    [Recipient(id=i["key"], channel=i["channel"], sender=i["sender"][:64]) for i in items],
                    ["channel", "sender"],
                )
        _write_decided(decided, now)
        if decided:
            notify_progress(broadcast_id)
    return Batch(broadcast, [{k: v for k, v in i.items() if k != "row"} for i in items], len(rows))


def batch_send(batch: Batch) -> dict[str, int]:
    """Send a claimed batch and record the outcomes. Returns counts per outcome; sets
    ``batch.resume_in`` when this batch opened a back-off (the caller resumes the broadcast then)."""
    broadcast = batch.broadcast
    if broadcast is None or not batch.items:
        return {}
    rate = broadcast.rate_per_second or 0.0
    backoff = _Backoff(broadcast)

    def before_send(item: dict[str, Any]) -> bool:
        if rate:
            _pace(item["sender"] or "default", rate)
        # Checked last, right before the call: a pause that came while we waited for a token holds.
        return not stopflags.is_raised(broadcast.id)

    results: list[dict[str, Any]] = []
    for channel, items in _by_channel(batch.items).items():
        # A stop in one channel's group (pause, cancel, a transient refusal) holds for the next.
        stopped = any(r["outcome"] == "not_sent" for r in results)
        results.extend(_hook(channel, "batch_send", channel=channel, items=items, throttled=backoff.begin,
                             before_send=(lambda item: False) if stopped else before_send))  # fmt: skip
    transient = next((r for r in results if r.get("transient")), None)
    if transient is not None:
        backoff.begin(transient.get("retry_after"))  # when the agent did not announce it itself
    # Only a batch the provider answered in full ends a back-off (one stopped by another batch's
    # back-off proves nothing).
    clean = not any(r["outcome"] == "not_sent" for r in results)
    counts = batch_record(broadcast_id=broadcast.id, results=results, backoff_until=backoff.until,
                          backing_off=bool(broadcast.backoff_step) and clean)  # fmt: skip
    if backoff.until is not None and counts.get("backoff_opened"):
        batch.resume_in = max(0.0, (backoff.until - timezone.now()).total_seconds())
    return counts


def backoff_seconds(*, retry_after: float | None, step: int) -> float:
    """How long a broadcast waits after a transient refusal: the provider's Retry-After when it
    gave one; else 1 s, 2 s, 4 s … by refused batch in a row, capped (BROADCAST_BACKOFF_MAX_SECONDS),
    a random half of it off ("equal jitter": the broadcasts throttled together do not come back
    together)."""
    if retry_after is not None and retry_after > 0:
        return float(retry_after)
    delay = min(
        settings.BROADCAST_BACKOFF_MAX_SECONDS, settings.BROADCAST_BACKOFF_BASE_SECONDS * 2 ** min(step, 30)
    )
    return delay / 2 + random.uniform(0, delay / 2)  # jitter, not a secret


class _Backoff:
    """The back-off a batch opens at its first transient refusal. ``begin`` is called from a
    sending thread (agents/common/batchsend.py): Redis only, no database; the writer records it."""

    def __init__(self, broadcast: Broadcast) -> None:
        self.broadcast_id, self.step = broadcast.id, broadcast.backoff_step
        self.until: Any = None
        self._lock = threading.Lock()

    def begin(self, retry_after: float | None) -> None:
        with self._lock:
            if self.until is not None:
                return
            seconds = backoff_seconds(retry_after=retry_after, step=self.step)
            self.until = timezone.now() + timedelta(seconds=seconds)
        log.warning("broadcast %s: provider refused for now, backing off %.1f s", self.broadcast_id, seconds)
        try:
            stopflags.hold(self.broadcast_id, seconds)  # the broadcast's other batches stop too
        except Exception as exc:  # the batch's writer still records it in the database
            log.warning("back-off flag not raised (%s)", type(exc).__name__)


def batch_record(
    *, broadcast_id: Any, results: list[dict[str, Any]], backoff_until: Any = None, backing_off: bool = False
) -> dict[str, int]:
    """Write a batch's outcomes (retried when PostgreSQL picks it as a deadlock victim), and the
    back-off it opened (``backoff_until``) or, when the broadcast was ``backing_off`` and this
    batch met no transient refusal, the end of it."""
    for attempt in range(1, DEADLOCK_RETRIES + 1):
        try:
            return _batch_record(broadcast_id=broadcast_id, results=results, backoff_until=backoff_until,
                                 backing_off=backing_off)  # fmt: skip
        except OperationalError:
            if attempt == DEADLOCK_RETRIES:
                raise  # the rows stay ``sending``: the reconciler asks the provider about them
            log.warning("broadcast batch outcomes: deadlock, retrying (%s)", attempt)
            time.sleep(0.05 * attempt)
    raise AssertionError("unreachable")


def lock_in_id_order(ids: list[Any]) -> None:
    """Lock these recipient rows in id order first: the batch's write and the callbacks' write
    touch overlapping rows, and two UPDATEs taking row locks in different orders deadlock."""
    list(Recipient.objects.select_for_update().filter(id__in=ids).order_by("id").values_list("id", flat=True))


def _batch_record(
    *, broadcast_id: Any, results: list[dict[str, Any]], backoff_until: Any, backing_off: bool
) -> dict[str, int]:
    """One UPDATE per outcome, one bulk_update of the provider ids (the broadcast's row last)."""
    now = timezone.now()
    by_outcome: dict[str, list[dict[str, Any]]] = {}
    for result in results:
        by_outcome.setdefault(result["outcome"], []).append(result)
    with transaction.atomic():
        lock_in_id_order([r["key"] for r in results])
        accepted = by_outcome.get("accepted", [])
        if accepted:
            # One UPDATE: every row its provider id; a callback may have raised a row to
            # delivered already, so only ``sending`` becomes sent.
            sending = Q(status=R.SENDING)
            Recipient.objects.filter(id__in=[r["key"] for r in accepted]).update(
                provider_id=ValuePerRow({r["key"]: r["sid"] for r in accepted}),
                status=Case(When(sending, then=Value(R.SENT)), default=F("status")),
                sent_at=Case(When(sending, then=Value(now)), default=F("sent_at")),
                lease_until=None, updated_at=now,
            )  # fmt: skip
        for result_group in _group_by_reason(by_outcome.get("refused", [])):
            reason, ids = result_group
            Recipient.objects.filter(id__in=ids, status=R.SENDING).update(
                status=R.FAILED, reason=reason, lease_until=None, updated_at=now
            )
        not_sent = [r["key"] for r in by_outcome.get("not_sent", [])]
        if not_sent:
            cancelled = Broadcast.objects.filter(id=broadcast_id, status=B.CANCELLED).exists()
            Recipient.objects.filter(id__in=not_sent, status=R.SENDING).update(
                status=R.CANCELLED if cancelled else R.PENDING, reason="broadcast cancelled" if cancelled else "",
                lease_until=None, sender="", updated_at=now,
            )  # fmt: skip
        # ``unknown`` (no answer after the request left): stays ``sending``; the reconciler asks.
        opened = _record_backoff(broadcast_id, backoff_until, backing_off, now)
        notify_progress(broadcast_id)
    counts = {outcome: len(rows) for outcome, rows in by_outcome.items()}
    if opened:
        counts["backoff_opened"] = 1
    return counts


def _record_backoff(broadcast_id: Any, until: Any, backing_off: bool, now) -> bool:
    """Open (or lengthen) the broadcast's back-off; True when this batch opened it (then it, and
    no other batch, schedules the resume). A batch without a transient refusal ends a back-off
    that is over (never one another batch opened meanwhile)."""
    over = Q(backoff_until__isnull=True) | Q(backoff_until__lte=now)
    if until is None:
        if backing_off:
            Broadcast.objects.filter(over, id=broadcast_id, backoff_step__gt=0).update(
                backoff_step=0, backoff_until=None
            )
        return False
    opened = Broadcast.objects.filter(over, id=broadcast_id).update(
        backoff_until=until, backoff_step=F("backoff_step") + 1
    )
    if not opened:
        Broadcast.objects.filter(id=broadcast_id, backoff_until__lt=until).update(backoff_until=until)
    return bool(opened)


def reconcile(*, older_than_seconds: float = 0.0, limit: int = 1000) -> dict[str, int]:
    """``sending`` recipients whose lease ran out (a lost worker): ask the provider whether each
    one left. Found → sent with its id; not found → pending again (sent by a later batch)."""
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    counts = {"sent": 0, "pending": 0}
    with transaction.atomic():
        rows = list(
            Recipient.objects.select_for_update(skip_locked=True)
            .filter(status=R.SENDING, lease_until__lt=cutoff)
            .select_related("broadcast")
            .order_by("id")[:limit]
        )
        if not rows:
            return counts
        found: dict[Any, Any] = {}
        for channel, items in _by_channel([_reconcile_item(r) for r in rows]).items():
            found.update(_hook(channel, "batch_reconcile", items=items) or {})
        now = timezone.now()
        # An agent that cannot tell whether a message left answers {"failed": reason}: it is
        # not sent a second time (at most once), it ends failed with that reason.
        unknown = [r for r in rows if isinstance(found.get(r.id), dict)]
        for row in unknown:
            row.status, row.lease_until, row.reason = (
                R.FAILED,
                None,
                str(found[row.id].get("failed", ""))[:200],
            )
        if unknown:
            Recipient.objects.bulk_update(unknown, ["status", "lease_until", "reason"])
        rows = [r for r in rows if r not in unknown]
        sent = [r for r in rows if found.get(r.id)]
        for row in sent:
            row.status, row.provider_id, row.sent_at, row.lease_until = R.SENT, found[row.id], now, None
            row.reason = "recovered after a lost worker"
        if sent:
            Recipient.objects.bulk_update(sent, ["status", "provider_id", "sent_at", "lease_until", "reason"])
        again = [r.id for r in rows if r not in sent]
        if again:
            Recipient.objects.filter(id__in=again).update(
                status=R.PENDING, lease_until=None, sender="", updated_at=now
            )
        counts.update(sent=len(sent), pending=len(again), failed=len(unknown))
        for broadcast_id in {r.broadcast_id for r in rows}:
            notify_progress(broadcast_id)
    log.info("broadcast recipients reconciled", extra=counts)
    return counts


def backoff_remaining(*, broadcast_id: Any) -> float | None:
    """Seconds until a running broadcast's back-off is over (0: not backing off); None when it
    is not running."""
    broadcast = (
        Broadcast.objects.filter(id=broadcast_id, status=B.RUNNING).only("id", "backoff_until").first()
    )
    return None if broadcast is None else _backoff_wait(broadcast, timezone.now())


def finish_if_done(*, broadcast_id: Any) -> bool:
    done = broadcast_finish_if_done(broadcast_id=broadcast_id)
    if done:
        notify_progress(broadcast_id)
    return done


# --- internals -----------------------------------------------------------------------------


def _backoff_wait(broadcast: Broadcast, now) -> float:
    """Seconds the broadcast still backs off: its ``backoff_until``, or the Redis key a batch
    raised the moment it was refused (before its writer has recorded it)."""
    recorded = (broadcast.backoff_until - now).total_seconds() if broadcast.backoff_until else 0.0
    return max(recorded, stopflags.backoff_left(broadcast.id), 0.0)


# Paced a little under the rate asked: the provider sees our grants plus the network's jitter,
# and a request that left late followed by one on time must still not show above the rate there.
PACING_MARGIN = 0.99


PACE_EARLY_SECONDS = 0.002


def _pace(sender: str, rate: float) -> None:
    """Wait for the sender's token: burst 1, so the sender never goes above its rate. The wait
    ends a little early and the bucket is asked again: with burst 1, every millisecond a
    woken thread comes late (the sleep, the GIL, the round trip) is refill the bucket throws
    away — 2 ms a token is 5 % of 25/s."""
    while True:
        wait = ratelimit.acquire(f"broadcast-sender:{sender}", rate=rate * PACING_MARGIN, burst=1.0)
        if wait <= 0:
            return
        time.sleep(wait - PACE_EARLY_SECONDS if wait > 2 * PACE_EARLY_SECONDS else wait)


def channel_of(broadcast: Broadcast, row: Recipient) -> str:
    return row.channel or broadcast.channel


def _hook(of: str, name: str, **kwargs: Any) -> Any:
    """The ``name`` hook of the agent that sends channel ``of``."""
    agent = AGENT_OF_CHANNEL[of]
    answer = call_hook(f"{agent}.{name}", **kwargs)
    if answer is None:
        raise RuntimeError(f"no {agent}.{name} hook: is the {agent} agent installed?")
    return answer


def _by_channel(items: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        groups.setdefault(item["channel"], []).append(item)
    return groups


def _reconcile_item(row: Recipient) -> dict[str, Any]:
    channel = channel_of(row.broadcast, row)
    to = row.address
    if to.startswith(NOTIFY_ADDRESS) and row.contact_id:
        # A notify recipient's address is its contact's on the chosen channel (read again here).
        contact = Contact.objects.filter(id=row.contact_id).first()
        to = address_for(contact, channel).removeprefix("whatsapp:") if contact else ""
    return {"key": row.id, "to": to, "correlation_id": correlation_id(row.broadcast_id), "channel": channel}


def _route(broadcast: Broadcast, rows: list[Recipient]) -> tuple[list[Recipient], dict[str, list[Any]]]:
    """A notify broadcast: each recipient's channel and address from the routing rules (the
    first channel of its rule's order it can receive on). Returns (routed rows, skipped by reason)."""
    skipped: dict[str, list[Any]] = {}
    if broadcast.channel != Channel.NOTIFY:
        return rows, skipped
    answers = route_contacts(contact_ids=[r.contact_id for r in rows if r.contact_id])
    routed = []
    for row in rows:
        answer = answers.get(row.contact_id, "no contact")
        if isinstance(answer, str):
            skipped.setdefault(answer[:200], []).append(row.id)
            continue
        row.channel, row.routed_address = answer
        routed.append(row)
    return routed, skipped


def _apply_rules(broadcast: Broadcast, rows: list[Recipient], now) -> tuple[list[Recipient], dict]:
    """Consent and quiet hours per recipient. Returns (rows to send, decisions for the others).
    (A notify broadcast's consent was read by routing, channel by channel.)"""
    decided: dict[str, Any] = {"opted_out": [], "deferred": [], "skipped": {}}
    contact_ids = {r.contact_id for r in rows if r.contact_id}
    opted_out = set()
    zones: dict[Any, str] = {}
    if contact_ids and broadcast.channel == Channel.NOTIFY:
        if broadcast.quiet_start is not None and broadcast.quiet_end is not None:
            zones = dict(Contact.objects.filter(id__in=contact_ids).values_list("id", "timezone"))
    elif contact_ids:
        opted_out = set(
            Consent.objects.filter(
                contact_id__in=contact_ids, channel=broadcast.channel, status=ConsentStatus.OPTED_OUT
            ).values_list("contact_id", flat=True)
        )
        if broadcast.quiet_start is not None and broadcast.quiet_end is not None:
            zones = dict(Contact.objects.filter(id__in=contact_ids).values_list("id", "timezone"))
    to_send = []
    for row in rows:
        if row.contact_id in opted_out:
            decided["opted_out"].append(row.id)
            continue
        if broadcast.quiet_start is not None and broadcast.quiet_end is not None:
            until = quiet_until(broadcast, _Zone(zones.get(row.contact_id) or "UTC"), now)
            if until is not None:
                row.not_before = until
                decided["deferred"].append(row)
                continue
        to_send.append(row)
    return to_send, decided


class _Zone:
    """What ``quiet_until`` reads of a contact: its time zone."""

    def __init__(self, timezone_name: str) -> None:
        self.timezone = timezone_name


def _prepare(broadcast: Broadcast, rows: list[Recipient], decided: dict) -> list[dict[str, Any]]:
    """Render each body, choose its sender, and let the messaging agent prepare the batch."""
    senders = broadcast.senders or [""]
    items = []
    for row in rows:
        channel = channel_of(broadcast, row)
        try:
            parts = _rendered(broadcast, channel, row.variables)
        except rendering.RenderError as exc:
            decided["skipped"].setdefault(str(exc)[:200], []).append(row.id)
            continue
        sender = senders[row.id % len(senders)] if channel != Channel.EMAIL else ""
        items.append({"key": row.id, "row": row, "to": getattr(row, "routed_address", row.address), **parts,
                      "channel": channel, "contact_id": row.contact_id, "sender": sender,
                      "ref": f"{REF_PREFIX}{row.id}", "correlation_id": correlation_id(broadcast.id)})  # fmt: skip
    if not items:
        return []
    prepared: dict[Any, dict[str, Any]] = {}
    for channel, group in _by_channel(items).items():
        prepared.update(_hook(channel, "batch_prepare", channel=channel,
                              items=[{k: v for k, v in i.items() if k != "row"} for i in group]))  # fmt: skip
    ready = []
    for item in items:
        answer = prepared[item["key"]]
        if answer.get("message_id") is None:
            decided["skipped"].setdefault(answer.get("reason", "refused")[:200], []).append(item["key"])
            continue
        item["message_id"] = answer["message_id"]
        item["sender"] = answer.get("sender", item["sender"])
        ready.append(item)
    return ready


def _rendered(broadcast: Broadcast, channel: str, variables: dict[str, Any]) -> dict[str, str]:
    """The recipient's body (and, by email, subject and HTML part): ``services.message_parts``."""
    return message_parts(broadcast, channel, variables)


def correlation_id(broadcast_id: Any) -> str:
    """The dossier messages of a broadcast share this correlation id (the timeline groups them;
    the reconciler finds a recipient's message by it and the address, unique in a broadcast)."""
    return f"broadcast:{broadcast_id}"


def _sender_expression(broadcast: Broadcast, items: list[dict[str, Any]]):
    if broadcast.channel == Channel.NOTIFY:
        return Value("")  # set per row with the channel (batch_claim)
    """The sender of each claimed row, as SQL: one value, or ``senders[id % n]`` (n branches, not
    one per row)."""
    used = {i["sender"] for i in items}
    if len(used) == 1:
        return Value(used.pop())
    senders = broadcast.senders
    residue = Mod(F("id"), len(senders))
    return Case(*[When(Exact(residue, k), then=Value(s)) for k, s in enumerate(senders)],
                default=Value(""), output_field=CharField())  # fmt: skip


def _write_decided(decided: dict, now) -> None:
    if decided["opted_out"]:
        Recipient.objects.filter(id__in=decided["opted_out"]).update(
            status=R.OPTED_OUT, reason="opted out", updated_at=now
        )
    if decided["deferred"]:
        Recipient.objects.bulk_update(decided["deferred"], ["not_before"])
    for reason, ids in decided["skipped"].items():
        Recipient.objects.filter(id__in=ids).update(status=R.SKIPPED, reason=reason, updated_at=now)


def _group_by_reason(results: list[dict[str, Any]]) -> list[tuple[str, list[Any]]]:
    groups: dict[str, list[Any]] = {}
    for result in results:
        reason = " ".join(part for part in (result.get("code") or "", result.get("reason") or "") if part)
        groups.setdefault(reason[:200] or "refused", []).append(result["key"])
    return list(groups.items())
