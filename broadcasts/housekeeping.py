"""The periodic job of broadcasts (beat's ``broadcasts.tick``; ``manage.py broadcasts_tick``)."""

from __future__ import annotations

from django.db.models import Q
from django.utils import timezone

from broadcasts import engine
from broadcasts.models import Broadcast, BroadcastStatus, Recipient, RecipientStatus
from broadcasts.services import broadcast_start

B, R = BroadcastStatus, RecipientStatus


def housekeeping_run() -> dict[str, int]:
    from broadcasts.tasks import kick

    now = timezone.now()
    started = 0
    for broadcast in Broadcast.objects.filter(status=B.SCHEDULED, scheduled_for__lte=now):
        broadcast_start(broadcast, actor="beat")
        started += 1
    reconciled = engine.reconcile()
    kicked = 0
    claimable = Recipient.objects.filter(status=R.PENDING).filter(
        Q(not_before__isnull=True) | Q(not_before__lte=now)
    )
    running = Broadcast.objects.filter(status=B.RUNNING)
    not_backing_off = Q(backoff_until__isnull=True) | Q(backoff_until__lte=now)
    for broadcast_id in running.filter(not_backing_off, id__in=claimable.values("broadcast_id")).values_list(
        "id", flat=True
    ):
        kick(broadcast_id, chains=1)
        kicked += 1
    for broadcast_id in running.exclude(id__in=Recipient.objects.filter(
            status__in=[R.PENDING, R.SENDING]).values("broadcast_id")).values_list("id", flat=True):  # fmt: skip
        engine.finish_if_done(broadcast_id=broadcast_id)
    return {"started": started, "kicked": kicked, **{f"reconciled_{k}": v for k, v in reconciled.items()}}
