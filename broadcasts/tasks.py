"""Celery tasks of broadcasts, on the ``messaging`` queue (a broadcast's work is messaging
provider work: the messaging worker pool runs it, docs/broadcasts.md "Queue")."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from django.conf import settings

from broadcasts import engine

QUEUE = "messaging"


def kick(broadcast_id: Any, *, chains: int | None = None) -> None:
    """Start ``chains`` batch chains for a running broadcast (each chains its successor)."""
    for _ in range(chains or settings.BROADCAST_PARALLEL_BATCHES):
        send_batch.apply_async(args=[str(broadcast_id)], queue=QUEUE)


@shared_task(name="broadcasts.send_batch", acks_late=True)
def send_batch(broadcast_id: str) -> dict[str, int]:
    """Claim a batch, queue the next one, send this one (the successor is queued after the claim
    committed and before the sends, so another worker process sends the next batch meanwhile)."""
    batch = engine.batch_claim(broadcast_id=broadcast_id)
    if batch.broadcast is None:
        return {}
    if not batch.claimed:
        due = engine.next_due(broadcast_id=broadcast_id)
        if due is not None:  # deferred recipients (quiet hours): come back when the first is due
            send_batch.apply_async(args=[broadcast_id], queue=QUEUE, countdown=min(due, 60.0))
        else:
            engine.finish_if_done(broadcast_id=broadcast_id)
        return {}
    send_batch.apply_async(args=[broadcast_id], queue=QUEUE)
    counts = engine.batch_send(batch)
    # The successor may have found nothing while this batch was sending: the last batch to finish
    # completes the broadcast (one EXISTS query).
    engine.finish_if_done(broadcast_id=broadcast_id)
    return counts


@shared_task(name="broadcasts.tick", acks_late=True)
def tick() -> dict[str, int]:
    """Beat's periodic run: start scheduled broadcasts whose time came, reconcile recipients of
    lost workers, and restart a chain for running broadcasts (a chain lost with its worker)."""
    from broadcasts.housekeeping import housekeeping_run

    return housekeeping_run()
