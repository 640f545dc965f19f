"""Celery-side handlers of the messaging agent (run after the orchestrator claimed the task)."""

from __future__ import annotations

from agents.messaging import callbacks, inbound, sending
from orchestrator.models import Task
from orchestrator.registry import handler, status_check


@handler("sms.send", channel="sms", queue="messaging")
def sms_send(task: Task) -> None:
    sending.message_send(task=task, channel="sms")


@handler("whatsapp.send", channel="whatsapp", queue="messaging")
def whatsapp_send(task: Task) -> None:
    sending.message_send(task=task, channel="whatsapp")


@handler("sms.inbound", channel="sms", queue="messaging", internal=True)
def sms_inbound(task: Task) -> None:
    inbound.inbound_park(task=task)


@handler("whatsapp.inbound", channel="whatsapp", queue="messaging", internal=True)
def whatsapp_inbound(task: Task) -> None:
    inbound.inbound_park(task=task)


@status_check("sms.send", "whatsapp.send")
def message_status_check(task_id) -> str:
    return callbacks.status_check(task_id=task_id)
