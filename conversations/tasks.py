"""Celery beat: the conversations sweep (wake snoozed, flag SLA breaches)."""

from celery import shared_task


@shared_task(name="conversations.sweep", ignore_result=True)
def sweep() -> dict[str, int]:
    from conversations.services import conversations_sweep

    return conversations_sweep()
