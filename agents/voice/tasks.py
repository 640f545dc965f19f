"""Celery tasks of the voice agent. They take ids and call services."""

from __future__ import annotations

import requests
from celery import shared_task
from django.conf import settings

from agents.voice import services


@shared_task(name="voice.fetch_recording", acks_late=True, autoretry_for=(requests.RequestException,),
             retry_backoff=True, retry_backoff_max=600, max_retries=6)  # fmt: skip
def fetch_recording(artifact_id: str) -> str:
    """Download a call recording from Twilio into the artifact store (retried with backoff)."""
    return services.recording_fetch(artifact_id=artifact_id)


@shared_task(name="voice.fetch_pending_recordings", acks_late=True)
def fetch_pending_recordings() -> int:
    """Beat's pick-up of recordings whose download was never queued or kept failing."""
    return services.recordings_pending_fetch(min_age_seconds=max(5, settings.MEDIA_PICKUP_INTERVAL_SECONDS))
