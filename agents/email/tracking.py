"""Delivery and engagement events, normalised by django-anymail, applied to our rows.

The webhook (``agents.email.webhooks``) stores each raw SendGrid event once and turns it
into anymail's ``AnymailTrackingEvent`` (``esp_to_anymail_event``: normalised
``event_type``, ``timestamp``, ``event_id``, ``metadata``, ``mta_response``, the raw event
in ``esp_event``). ``email_apply_tracking`` maps that onto the ``Email`` row, its
``EmailEvent`` history, the contact's consent and the task — one function for every event,
whatever batch it came in.
"""

from __future__ import annotations

import logging

from anymail.signals import AnymailTrackingEvent, EventType
from django.db import transaction
from django.utils import timezone

from agents.email.services import contact_ids_for, email_opt_out
from comms_platform import events
from dossiers.models import Contact, Email, EmailEvent
from orchestrator.models import Task
from orchestrator.registry import call_hook
from orchestrator.services import task_transition
from orchestrator.states import FINAL, IllegalTransition, TaskStatus

log = logging.getLogger(__name__)

# Email status per normalised event, and its rank: an email never goes back to a lower
# rank (events arrive unordered and are retried for 24 h).
EMAIL_STATUS = {
    EventType.QUEUED: "processed",  # SendGrid "processed"
    EventType.DEFERRED: "deferred",
    EventType.DELIVERED: "delivered",
    EventType.OPENED: "opened",
    EventType.CLICKED: "clicked",
    EventType.BOUNCED: "bounced",  # SendGrid "bounce" (type bounce or blocked)
    EventType.REJECTED: "dropped",  # SendGrid "dropped"
}
STATUS_RANK = {
    "": 0, "queued": 0, "sent": 1, "processed": 2, "deferred": 3, "delivered": 4, "opened": 5, "clicked": 6,
    "bounced": 9, "dropped": 9, "failed": 9,
}  # fmt: skip
TASK_OUTCOME = {
    EventType.DELIVERED: TaskStatus.SUCCEEDED,
    EventType.OPENED: TaskStatus.SUCCEEDED,
    EventType.CLICKED: TaskStatus.SUCCEEDED,
    EventType.BOUNCED: TaskStatus.FAILED,
    EventType.REJECTED: TaskStatus.FAILED,
}
# SendGrid unsubscribe, group_unsubscribe, spamreport.
OPT_OUT_EVENTS = frozenset({EventType.UNSUBSCRIBED, EventType.COMPLAINED})
# Recorded on the email, but they change neither its status nor the task (group_resubscribe).
RECORD_ONLY_EVENTS = frozenset({EventType.SUBSCRIBED})
KNOWN_EVENTS = frozenset(EMAIL_STATUS) | OPT_OUT_EVENTS | RECORD_ONLY_EVENTS


def email_apply_tracking(*, event: AnymailTrackingEvent, event_id: str) -> str:
    """Apply one normalised event (already de-duplicated); returns an outcome label."""
    raw = event.esp_event
    name = str(raw.get("event", ""))  # SendGrid's own name: kept on EmailEvent and in outcomes
    if event.event_type not in KNOWN_EVENTS:
        log.warning("SendGrid event %r is not one we know: stored, not applied", name)
        return f"unknown:{name}"[:64]
    email = _email_for(event)
    if email is None:
        return "unmatched"
    EmailEvent.objects.create(email=email, event=name, provider_event_id=event_id[:200], detail=raw,
                              occurred_at=event.timestamp or timezone.now())  # fmt: skip
    outcome = name
    status = EMAIL_STATUS.get(event.event_type)
    if status and STATUS_RANK[status] > STATUS_RANK.get(email.status, 0):
        Email.objects.filter(id=email.id).update(status=status, updated_at=timezone.now())
    if event.event_type in events.EMAIL_EVENT:
        events.publish(
            events.EMAIL_EVENT[event.event_type], events.email_data(email, name), task_id=email.task_id
        )
    if event.event_type in OPT_OUT_EVENTS:
        email_opt_out(email=email, detail=f"sendgrid {name}")
    # anymail does not tell a hard bounce from a block: SendGrid's ``type`` does.
    if event.event_type == EventType.BOUNCED and raw.get("type", "bounce") == "bounce":
        _mark_undeliverable(email=email)
        outcome = "hard_bounce"
    _hand_back(event=event, outcome=outcome)
    # Opens and clicks keep coming after the task is final: skip the transition (and its
    # stale TaskEvent row) then, rather than record one per event.
    if event.event_type in TASK_OUTCOME and email.task_id and email.task.status not in FINAL:
        _move_task(email=email, event=event, to=TASK_OUTCOME[event.event_type])
    return outcome


# What a broadcast recipient hears of its email (``email.statuses_applied``): a hard bounce,
# a block or a drop fails it.
BROADCAST_STATUS = {
    EventType.DELIVERED: "delivered",
    EventType.BOUNCED: "failed",
    EventType.REJECTED: "failed",
}


def _hand_back(*, event: AnymailTrackingEvent, outcome: str) -> None:
    """An email sent for a caller's ``ref`` (a broadcast recipient) reports its outcome there."""
    ref = str(event.metadata.get("ref", ""))
    status = BROADCAST_STATUS.get(event.event_type)
    if ref and status:
        reason = (
            ""
            if status == "delivered"
            else str(event.mta_response or event.esp_event.get("reason") or outcome)
        )
        call_hook(
            "email.statuses_applied", items=[{"ref": ref, "status": status, "code": "", "reason": reason}]
        )


def _email_for(event: AnymailTrackingEvent) -> Email | None:
    """By our ``email_id`` (anymail metadata, from SendGrid's custom args), else by SendGrid's
    message id (the ``sg_message_id`` prefix = the ``X-Message-Id`` we stored)."""
    email_id = str(event.metadata.get("email_id", ""))
    if email_id.isdigit():
        found = Email.objects.select_related("task").filter(id=int(email_id)).first()
        if found is not None:
            return found
    message_id = str(event.esp_event.get("sg_message_id", "")).split(".")[0]
    if message_id:
        return (
            Email.objects.select_related("task")
            .filter(provider_message_id=message_id)
            .order_by("-id")
            .first()
        )
    return None


def _mark_undeliverable(*, email: Email) -> None:
    Contact.objects.filter(id__in=contact_ids_for(email=email), email__iexact=email.to_address).update(
        email_undeliverable=True, updated_at=timezone.now()
    )


def _move_task(*, email: Email, event: AnymailTrackingEvent, to: str) -> None:
    name = str(event.esp_event.get("event", ""))
    failure = to == TaskStatus.FAILED
    reason = str(event.mta_response or event.esp_event.get("reason") or name)[:500]
    try:
        with transaction.atomic():
            task_transition(
                task_id=email.task_id, to=to, actor="webhook:sendgrid", details={"event": name, "email_id": email.id},
                error_code=f"email_{EMAIL_STATUS[event.event_type]}" if failure else None,
                error_message=reason if failure else None,
            )  # fmt: skip
    except IllegalTransition:
        # Already final (a bounce after delivered, an open after a failure): the email row
        # and its events keep the detail; the task's outcome stays as it was decided.
        pass
    except Task.DoesNotExist:
        pass
