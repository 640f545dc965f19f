"""Registry hooks broadcasts offer to the agents (they may not import broadcasts).

``messaging.statuses_applied``: the messaging agent applied a batch of provider status
callbacks; those whose callback URL carried a broadcast reference (``b:<recipient id>``) move
their recipient to delivered / failed — one UPDATE per outcome, never lowering a status.
``email.statuses_applied``: the same from the email agent's SendGrid events (delivered;
bounce / dropped → failed), the ref travelling as a custom arg.
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from broadcasts.engine import REF_PREFIX, lock_in_id_order
from broadcasts.models import Recipient, RecipientStatus
from broadcasts.services import notify_progress
from orchestrator.registry import hook

R = RecipientStatus
DELIVERED = {"delivered", "read"}
FAILED = {"undelivered", "failed"}
# What a status may replace: a late ``failed`` never undoes ``delivered``.
LOWER = {R.DELIVERED: [R.SENDING, R.SENT], R.FAILED: [R.SENDING, R.SENT]}


@hook("email.statuses_applied")  # the email agent's delivered / bounced events, the same shape
@hook("messaging.statuses_applied")
def statuses_applied(*, items: list[dict[str, Any]]) -> int:
    """Apply provider statuses to broadcast recipients. Returns how many rows changed."""
    groups: dict[tuple[str, str], list[int]] = {}
    for item in items:
        ref = item.get("ref") or ""
        if not ref.startswith(REF_PREFIX) or not ref[len(REF_PREFIX) :].isdigit():
            continue
        status = item.get("status") or ""
        if status in DELIVERED:
            key = (R.DELIVERED, "")
        elif status in FAILED:
            reason = " ".join(p for p in (item.get("code") or "", item.get("reason") or "") if p)
            key = (R.FAILED, reason[:200] or status)
        else:
            continue
        groups.setdefault(key, []).append(int(ref[len(REF_PREFIX) :]))
    changed = 0
    now = timezone.now()
    touched: set[Any] = set()
    if groups:
        lock_in_id_order([i for ids in groups.values() for i in ids])
    for (status, reason), ids in groups.items():
        rows = Recipient.objects.filter(id__in=ids, status__in=LOWER[status])
        touched.update(rows.values_list("broadcast_id", flat=True).distinct())
        changed += rows.update(status=status, reason=reason, lease_until=None, updated_at=now)
    for broadcast_id in touched:
        notify_progress(broadcast_id)
    return changed
