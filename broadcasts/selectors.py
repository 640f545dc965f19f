"""Reads of broadcasts: live progress (one aggregate query) and the per-recipient CSV rows."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.db.models import Count, Q
from django.utils import timezone

from broadcasts.models import Broadcast, Recipient, RecipientStatus

R = RecipientStatus
CSV_HEADER = ["line", "address", "status", "reason", "provider_id", "sender", "sent_at", "updated_at"]
DONE = (R.SENT, R.DELIVERED, R.FAILED, R.SKIPPED, R.OPTED_OUT, R.CANCELLED)


def broadcast_progress(broadcast: Broadcast) -> dict[str, Any]:
    """Counts per status (and skipped per reason) of one broadcast, in one query.

    ``accepted`` is what the broadcast accepted at creation; ``done`` counts recipients nothing
    more will be sent to; ``percent`` is done / accepted.
    """
    rows = (
        Recipient.objects.filter(broadcast_id=broadcast.id)
        .values("status", "reason")
        .annotate(n=Count("id"))
        .order_by()
    )
    counts = {status: 0 for status in R.values}
    skipped_by_reason: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] += row["n"]
        if row["status"] == R.SKIPPED:
            skipped_by_reason[row["reason"] or "unknown"] = (
                skipped_by_reason.get(row["reason"] or "unknown", 0) + row["n"]
            )
    total = sum(counts.values())
    done = sum(counts[s] for s in DONE)
    return {
        "total": total,
        "accepted": broadcast.total,
        "rejected": broadcast.rejected,
        **counts,
        "skipped_by_reason": skipped_by_reason,
        "done": done,
        # Nothing in the table yet while an accepted list is being imported: 0 %, not 100 %.
        "percent": round(100.0 * done / total, 1) if total else (0.0 if broadcast.total else 100.0),
        # The provider refused for now (429 / 5xx): no batch leaves before this (docs/broadcasts.md).
        "backoff_until": broadcast.backoff_until if _backing_off(broadcast) else None,
    }


def _backing_off(broadcast: Broadcast) -> bool:
    return broadcast.backoff_until is not None and broadcast.backoff_until > timezone.now()


def recipients_csv_rows(broadcast: Broadcast) -> Iterator[list[Any]]:
    """The header, then one row per recipient in input order (streamed in chunks)."""
    yield CSV_HEADER
    rows = (
        Recipient.objects.filter(broadcast_id=broadcast.id)
        .order_by("line")
        .values_list("line", "address", "status", "reason", "provider_id", "sender", "sent_at", "updated_at")
    )
    for line, address, status, reason, provider_id, sender, sent_at, updated_at in rows.iterator(
        chunk_size=2000
    ):
        yield [line, address, status, reason, provider_id, sender,
               sent_at.isoformat() if sent_at else "", updated_at.isoformat() if updated_at else ""]  # fmt: skip


def broadcasts_running_ids() -> list[Any]:
    return list(Broadcast.objects.filter(status="running").values_list("id", flat=True))


def active_progress_filter() -> Q:
    return Q(status__in=[R.PENDING, R.SENDING])
