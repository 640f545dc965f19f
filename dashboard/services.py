"""Writes of the inbound queue: sync, claim, reply, resolve, flagging, auto-assignment."""

from __future__ import annotations

import contextlib
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from dashboard import adapters
from dashboard.live import publish_inbox_update
from dashboard.models import InboxItem, OperatorProfile
from dossiers.models import AuditAction, ConsentStatus, Message
from dossiers.services import audit_record, consent_status
from orchestrator.models import Task
from orchestrator.services import task_cancel, task_create, task_retry, task_transition
from orchestrator.states import IllegalTransition, TaskStatus

INBOUND_TYPES = {"sms.inbound": "sms", "whatsapp.inbound": "whatsapp"}
WHATSAPP_WINDOW = timedelta(hours=24)


class ReplyRefused(Exception):
    """The reply was not sent; the message says why, for the operator."""


def inbox_sync(*, limit: int = 500) -> int:
    """Create the queue rows of inbound tasks that have none yet (lazily, when the queue is
    looked at). Concurrent callers are fine: the one-to-one constraint drops duplicates."""
    missing = (
        Task.objects.filter(type__in=INBOUND_TYPES, inbox_item__isnull=True)
        .exclude(status=TaskStatus.CANCELLED)
        .exclude(contact__synthetic=True)  # smoke runs stay out of the operators' queue
        .order_by("created_at")
        .values_list("id", "created_at")[:limit]
    )
    items = [InboxItem(task_id=task_id, received_at=created) for task_id, created in missing]
    InboxItem.objects.bulk_create(items, ignore_conflicts=True)
    if items and settings.INBOX_AUTO_ASSIGN:
        for item in InboxItem.objects.filter(task_id__in=[i.task_id for i in items], claimed_by__isnull=True):
            inbox_auto_assign(item_id=item.pk)
    return len(items)


def inbox_flag_unclaimed(*, now: Any = None) -> int:
    """Flag open conversations nobody claimed within INBOX_UNCLAIMED_FLAG_SECONDS."""
    cutoff = (now or timezone.now()) - timedelta(seconds=settings.INBOX_UNCLAIMED_FLAG_SECONDS)
    return InboxItem.objects.filter(
        claimed_by__isnull=True, resolved_at__isnull=True, flagged=False, received_at__lt=cutoff
    ).update(flagged=True)


def inbox_claim(*, item_id: int, user: Any) -> bool:
    """Claim a conversation. One conditional UPDATE: of two operators claiming at once,
    exactly one gets 1 row back; the other gets False and is told who has it."""
    won = (
        InboxItem.objects.filter(pk=item_id, claimed_by__isnull=True, resolved_at__isnull=True).update(
            claimed_by=user, claimed_at=timezone.now(), flagged=False
        )
        == 1
    )
    if won:
        publish_inbox_update(
            InboxItem.objects.values_list("task_id", flat=True).get(pk=item_id), reason="claimed", by=user.pk
        )
    return won


def inbox_release(*, item_id: int, user: Any) -> bool:
    released = InboxItem.objects.filter(pk=item_id, claimed_by=user, resolved_at__isnull=True).update(
        claimed_by=None, claimed_at=None
    )
    if released:
        publish_inbox_update(
            InboxItem.objects.values_list("task_id", flat=True).get(pk=item_id), reason="released", by=user.pk
        )
    return released == 1


def inbox_resolve(*, item_id: int, user: Any) -> bool:
    done = (
        InboxItem.objects.filter(pk=item_id, resolved_at__isnull=True)
        .filter(Q(claimed_by=user) | Q(claimed_by__isnull=True))
        .update(resolved_at=timezone.now(), claimed_by=user)
    )
    if done:
        task_id = InboxItem.objects.values_list("task_id", flat=True).get(pk=item_id)
        _finish_inbound(task_id=task_id, user=user)
        publish_inbox_update(task_id, reason="resolved", by=user.pk)
    return done == 1


def _finish_inbound(*, task_id: Any, user: Any) -> None:
    """Resolving answers the inbound task: it succeeds (recorded, with who did it)."""
    actor = f"operator:{user.get_username()}"
    # Still pending/queued (no agent parked it yet): the state machine refuses; the item is resolved.
    with contextlib.suppress(IllegalTransition):
        task_transition(task_id=task_id, to=TaskStatus.SUCCEEDED, actor=actor, details={"action": "resolve"})
    audit_record(actor=actor, action=AuditAction.OPERATOR_ACTION, object_type="task", object_id=task_id,
                 details={"action": "resolve"})  # fmt: skip


def whatsapp_window_open(*, contact: Any, now: Any = None) -> bool:
    """WhatsApp allows free text only within 24 hours of the customer's last message."""
    last = getattr(contact, "last_inbound_whatsapp_at", None)
    return bool(last and (now or timezone.now()) - last < WHATSAPP_WINDOW)


def inbox_reply(
    *,
    item_id: int,
    user: Any,
    body: str = "",
    template: str = "",
    variables: dict[str, str] | None = None,
) -> Task:
    """Reply on the conversation's channel with an ``sms.send`` / ``whatsapp.send`` task.

    Raises ReplyRefused when the operator does not hold the conversation, the contact opted
    out on the channel, there is no address, or WhatsApp's 24-hour window is closed for free text.
    """
    item = InboxItem.objects.select_related("task__contact").get(pk=item_id)
    task = item.task
    channel = INBOUND_TYPES[task.type]
    if item.claimed_by_id != user.pk:
        raise ReplyRefused("Claim the conversation before replying.")
    if item.resolved_at:
        raise ReplyRefused("This conversation is resolved.")
    contact = task.contact
    if contact and consent_status(contact_id=contact.pk, channel=channel) == ConsentStatus.OPTED_OUT:
        raise ReplyRefused(f"{contact} opted out of {channel}: no reply can be sent on this channel.")
    message = Message.objects.filter(task=task, direction="inbound").first()
    to = adapters.reply_address(channel=channel, contact=contact, message=message)
    if not to:
        raise ReplyRefused("No address to reply to.")
    if template:
        payload: dict[str, Any] = {"to": to, "template": template, "variables": variables or {}}
    else:
        body = body.strip()
        if not body:
            raise ReplyRefused("Write a reply first.")
        if channel == "whatsapp" and not whatsapp_window_open(contact=contact):
            raise ReplyRefused("Outside WhatsApp's 24-hour window: send an approved template instead.")
        payload = {"to": to, "body": body}
    reply, _ = task_create(
        type=f"{channel}.send",
        payload=payload,
        contact_id=contact.pk if contact else None,
        correlation_id=task.correlation_id or str(task.id),
        source=f"console:{user.get_username()}",
        parent_id=task.id,
    )
    publish_inbox_update(task.id, reason="replied")
    return reply


def inbox_auto_assign(*, item_id: int) -> bool:
    """Give an unclaimed conversation to the online operator, under capacity, who was
    assigned least recently (round robin). Returns False when nobody is free."""
    open_count = Count("user__inboxitem_claims", filter=Q(user__inboxitem_claims__resolved_at__isnull=True))
    candidates = (
        OperatorProfile.objects.filter(online=True, user__is_active=True, user__is_staff=True)
        .annotate(open=open_count)
        .filter(open__lt=F("capacity"))
        .order_by(F("last_assigned_at").asc(nulls_first=True), "pk")
    )
    for profile in candidates[:5]:
        with transaction.atomic():
            if inbox_claim(item_id=item_id, user=profile.user):
                OperatorProfile.objects.filter(pk=profile.pk).update(last_assigned_at=timezone.now())
                return True
    return False


# --- Task actions (the task page's buttons) ---------------------------------------------------


def task_retry_by_operator(*, task_id: Any, user: Any) -> Task:
    """Retry: a NEW task (``parent`` = the old one); the old task records who retried it
    (an event that changes nothing) and the audit log the action. Raises NotRetryable."""
    actor = f"operator:{user.get_username()}"
    with transaction.atomic():
        new = task_retry(task_id=task_id, actor=actor)
        old_status = Task.objects.values_list("status", flat=True).get(pk=task_id)
        task_transition(task_id=task_id, to=old_status, actor=actor,
                        details={"action": "retry", "new_task": str(new.id)})  # fmt: skip
        audit_record(actor=actor, action=AuditAction.OPERATOR_ACTION, object_type="task", object_id=task_id,
                     details={"action": "retry", "new_task": str(new.id)})  # fmt: skip
    return new


def task_cancel_by_operator(*, task_id: Any, user: Any) -> Any:
    """Cancel through the state machine (stale when already final), with an audit entry."""
    actor = f"operator:{user.get_username()}"
    with transaction.atomic():
        result = task_cancel(task_id=task_id, actor=actor, reason="cancelled by an operator")
        audit_record(actor=actor, action=AuditAction.OPERATOR_ACTION, object_type="task", object_id=task_id,
                     details={"action": "cancel", "applied": result.applied})  # fmt: skip
    return result
