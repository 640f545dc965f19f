"""Celery tasks of the messaging agent: slow work pushed out of the webhooks."""

from __future__ import annotations

import requests
from celery import shared_task
from django.conf import settings

from agents.messaging import callbacks, inbound, sending


@shared_task(
    name="messaging.download_media", acks_late=True, autoretry_for=(requests.RequestException,),
    retry_backoff=2, retry_backoff_max=300, retry_jitter=True, max_retries=5,
)  # fmt: skip
def download_media(message_id: int) -> int:
    return inbound.media_download(message_id=message_id)


@shared_task(name="messaging.drain_status_events", acks_late=True)
def drain_status_events() -> int:
    return callbacks.status_events_drain()


@shared_task(name="messaging.fetch_pending_media", acks_late=True)
def fetch_pending_media() -> int:
    """Beat's pick-up of inbound media whose download was never queued or kept failing."""
    return inbound.media_pending_fetch(min_age_seconds=max(5, settings.MEDIA_PICKUP_INTERVAL_SECONDS))


@shared_task(name="messaging.close_open_attempts", acks_late=True)
def close_open_attempts() -> int:
    """Beat's close of send attempts left ``started`` on tasks that have ended."""
    return sending.attempts_close_open()
