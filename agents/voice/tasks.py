"""Celery tasks of the voice agent. They take ids and call services."""

from __future__ import annotations

import requests
from celery import shared_task

from agents.voice import services


@shared_task(name="voice.fetch_recording", acks_late=True, autoretry_for=(requests.RequestException,),
             retry_backoff=True, retry_backoff_max=600, max_retries=6)  # fmt: skip
def fetch_recording(artifact_id: str) -> str:
    """Download a call recording from Twilio into the artifact store (retried with backoff)."""
    return services.recording_fetch(artifact_id=artifact_id)
