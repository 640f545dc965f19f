"""Celery tasks of the outbound webhooks, on their own queue (settings.WEBHOOK_QUEUE)."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from event_webhooks import services


@shared_task(
    bind=True, name="event_webhooks.deliver", acks_late=True, reject_on_worker_lost=True, ignore_result=True
)
def deliver(self, delivery_id: int, expected_attempts: int = 0) -> str:
    """One attempt; the next one is scheduled here (a countdown) when it is near, else by the sweep.
    acks_late + reject_on_worker_lost: a worker killed mid-request hands the message back."""
    outcome = services.delivery_attempt(delivery_id=delivery_id, expected_attempts=expected_attempts)
    near = outcome.retry_in is not None and outcome.retry_in <= settings.WEBHOOK_MAX_COUNTDOWN_SECONDS
    # In process (no broker: the embedded default) a countdown would not wait: the retry stays
    # in the database for the sweep instead of running at once.
    if outcome.status == "retry" and near and not self.request.is_eager:
        services.enqueue([delivery_id], attempts={delivery_id: outcome.attempt}, countdown=outcome.retry_in)
    return outcome.status


@shared_task(name="event_webhooks.sweep", ignore_result=True)
def sweep() -> int:
    return services.sweep_due()
