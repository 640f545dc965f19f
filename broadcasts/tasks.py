"""Celery tasks of broadcasts, on the ``messaging`` queue (a broadcast's work is messaging
provider work: the messaging worker pool runs it, docs/broadcasts.md "Queue")."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task
from django.conf import settings

from broadcasts import engine, services
from orchestrator.errors import TransientError

log = logging.getLogger(__name__)

QUEUE = "messaging"
IMPORT_RETRIES = 3
WRITE_RETRIES = 4


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
        # Deferred recipients (quiet hours) stay pending: beat's tick restarts the chain once they
        # are due (within its 30 s). No timer task here: one per chain would pile up.
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


@shared_task(name="broadcasts.import_recipients", bind=True, acks_late=True, max_retries=IMPORT_RETRIES)
def import_recipients(self, broadcast_id: str) -> str:
    """The console's confirmed upload inserted (one transaction), then the broadcast starts.
    The message carries the id only: the rows wait in ``BroadcastUpload``. Idempotent
    (``services.broadcast_import``); acks late, so a lost worker's import runs again."""
    try:
        return services.broadcast_import(broadcast_id=broadcast_id)
    except Exception as exc:
        # Nothing of the import was written (one transaction): retry, then say so on the broadcast.
        if self.request.retries < self.max_retries and not self.request.called_directly:
            log.warning("broadcast import failed, retrying", extra={"broadcast": broadcast_id})
            raise self.retry(countdown=2 ** (self.request.retries + 1)) from exc
        log.exception("broadcast import failed", extra={"broadcast": broadcast_id})
        services.broadcast_fail(broadcast_id=broadcast_id, reason=f"the import failed: {_why(exc)}")
        return "failed"


@shared_task(name="broadcasts.write_body", bind=True, acks_late=True, max_retries=WRITE_RETRIES)
def write_body(self, broadcast_id: str) -> str:
    """The content agent writes a ``writing`` broadcast's body, once (``services.broadcast_write_body``);
    a transient refusal (timeout, 429, 5xx) is retried with back-off, then fails the broadcast."""
    try:
        return services.broadcast_write_body(broadcast_id=broadcast_id)
    except TransientError as exc:
        if self.request.retries < self.max_retries and not self.request.called_directly:
            wait = getattr(exc, "retry_after", None) or 2 ** (self.request.retries + 1)
            raise self.retry(countdown=min(float(wait), 60.0)) from exc
        services.broadcast_fail(
            broadcast_id=broadcast_id, reason=f"the content agent could not write a body: {exc.message}"
        )
        return "failed"


def _why(exc: Exception) -> str:
    """A reason an operator can read, without the database's text (it may quote row values)."""
    from broadcasts.errors import BroadcastError

    return str(exc) if isinstance(exc, BroadcastError) else type(exc).__name__
