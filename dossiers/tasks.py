"""Periodic dossier jobs (Celery beat, orchestrator queue)."""

from __future__ import annotations

from celery import shared_task

from dossiers.retention import retention_apply


@shared_task(name="dossiers.apply_retention", acks_late=True)
def apply_retention() -> dict[str, int]:
    report = retention_apply()
    return {**report.counts, "blobs": report.blobs}
