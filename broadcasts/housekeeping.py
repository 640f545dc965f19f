"""The periodic job of broadcasts (beat's ``broadcasts.tick``; ``manage.py broadcasts_tick``)."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Q
from django.utils import timezone

from broadcasts import engine
from broadcasts.models import Broadcast, BroadcastStatus, Recipient, RecipientStatus
from broadcasts.services import broadcast_start

B, R = BroadcastStatus, RecipientStatus


# An importing / writing broadcast untouched this long lost its task's message (the task acks
# late, so a lost worker's is redelivered; this covers a message never published): queue it
# again — the task is idempotent and skips a broadcast another run holds.
STALE_SETUP = timedelta(minutes=5)


def housekeeping_run() -> dict[str, int]:
    from broadcasts.tasks import QUEUE, import_recipients, kick, write_body

    now = timezone.now()
    stale = Broadcast.objects.filter(updated_at__lt=now - STALE_SETUP)
    for broadcast_id in stale.filter(status=B.IMPORTING).values_list("id", flat=True):
        import_recipients.apply_async(args=[str(broadcast_id)], queue=QUEUE)
    for broadcast_id in stale.filter(status=B.WRITING).values_list("id", flat=True):
        write_body.apply_async(args=[str(broadcast_id)], queue=QUEUE)
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
