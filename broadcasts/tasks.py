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
    if batch.wait:
        # Backing off: this chain ends here; the batch that opened the back-off queued the
        # resume, which starts the chains again when it is over (beat's tick too, as a net).
        return {"backing_off": 1}
    if not batch.claimed:
        # Deferred recipients (quiet hours) stay pending: beat's tick restarts the chain once they
        # are due (within its 30 s). No timer task here: one per chain would pile up.
        engine.finish_if_done(broadcast_id=broadcast_id)
        return {}
    send_batch.apply_async(args=[broadcast_id], queue=QUEUE)
    counts = engine.batch_send(batch)
    if batch.resume_in is not None:
        _resume_later(broadcast_id, batch.resume_in)
    # The successor may have found nothing while this batch was sending: the last batch to finish
    # completes the broadcast (one EXISTS query).
    engine.finish_if_done(broadcast_id=broadcast_id)
    return counts


@shared_task(name="broadcasts.resume", acks_late=True)
def resume(broadcast_id: str) -> dict[str, int]:
    """After a back-off: start the broadcast's batch chains again (or wait on, when another batch
    lengthened the back-off meanwhile)."""
    wait = engine.backoff_remaining(broadcast_id=broadcast_id)
    if wait is None:
        return {}  # no longer running
    if wait > 0:
        _resume_later(broadcast_id, wait)
        return {"waiting": 1}
    kick(broadcast_id)
    return {"kicked": settings.BROADCAST_PARALLEL_BATCHES}


def _resume_later(broadcast_id: str, seconds: float) -> None:
    if resume.app.conf.task_always_eager:
        # No broker, no countdown (the embedded default runs tasks inline): beat's tick starts
        # the chains again once the back-off is over.
        return
    # At most 5 minutes at a time (a long Retry-After waits in several steps): well under the
    # Redis broker's visibility timeout (1 h), after which it would hand the ETA task out again.
    resume.apply_async(args=[broadcast_id], queue=QUEUE, countdown=min(seconds, 300.0))


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
