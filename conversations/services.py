"""Writes of conversations: join a message, assign, claim, reply, snooze, resolve, SLA, availability.

Keyword-only and atomic. A conversation row is locked (SELECT … FOR UPDATE) while a message
joins it; claiming is a conditional UPDATE on ``assignee IS NULL`` so of two operators
claiming at once exactly one wins.
"""

from __future__ import annotations

import contextlib
import re
from datetime import datetime, timedelta
from typing import Any

import structlog
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from conversations.models import (
    ACTIVE,
    Conversation,
    ConversationEvent,
    ConversationTask,
    Operator,
    PrivateNote,
)
from conversations.models import Status as C
from dossiers.models import AuditAction, ConsentStatus, Contact
from dossiers.services import audit_record, consent_status
from orchestrator.live import INBOX_GROUP, send_group
from orchestrator.models import Task
from orchestrator.services import task_create, task_transition
from orchestrator.states import FINAL, IllegalTransition, TaskStatus

log = structlog.get_logger(__name__)
KEYWORDS = ("stop", "start")  # consent keywords: they join the thread but ask nothing of an operator


class ConversationRefused(Exception):
    """The action was not done; the message says why, for the operator."""


def _actor(user: Any) -> str:
    return f"operator:{user.get_username()}" if user is not None else "system"


def _event(conversation_id: int, kind: str, actor: str = "", **details: Any) -> None:
    """Record what happened and tell the open console pages, after commit (the inbox group)."""
    ConversationEvent.objects.create(conversation_id=conversation_id, kind=kind, actor=actor, details=details)
    publish_conversation_update(conversation_id, reason=kind)


def publish_conversation_update(conversation_id: int, *, reason: str) -> None:
    message = {"type": "inbox.update", "conversation_id": str(conversation_id), "reason": reason}
    transaction.on_commit(lambda: send_group(INBOX_GROUP, message))


def _locked(conversation_id: int) -> Conversation:
    return Conversation.objects.select_for_update().get(pk=conversation_id)


def _get_or_create_locked(*, contact_id: Any, channel: str) -> tuple[Conversation, bool]:
    """The contact's conversation on the channel, locked; concurrent creators race on the
    unique constraint and the loser locks the winner's row."""
    row = Conversation.objects.select_for_update().filter(contact_id=contact_id, channel=channel).first()
    if row is not None:
        return row, False
    try:
        with transaction.atomic():
            return Conversation.objects.create(contact_id=contact_id, channel=channel), True
    except IntegrityError:
        return Conversation.objects.select_for_update().get(contact_id=contact_id, channel=channel), False


# --- Messages join ------------------------------------------------------------------------------


def conversation_record(
    *,
    contact_id: Any,
    channel: str,
    direction: str,
    occurred_at: datetime,
    task_id: Any = None,
    kind: str = "message",
    object_id: Any = None,
) -> Conversation | None:
    """A message of the thread was recorded: join it to the contact's conversation.

    Inbound: creates the conversation, or reopens a resolved one, wakes a snoozed one, counts
    it unread, starts the waiting clock and its SLA, and holds the inbound task. A consent
    keyword (STOP/START) joins without reopening or waiting for an answer. Outbound: joins an
    existing conversation only (a campaign opens none) and stops the waiting clock.
    """
    if contact_id is None:
        return None
    if direction == "outbound":  # every send passes here: one statement when there is no conversation
        return _record_outbound(contact_id=contact_id, channel=channel, occurred_at=occurred_at)
    if Contact.objects.filter(pk=contact_id, synthetic=True).exists():
        return None
    keyword = ""
    if task_id:
        keyword = (Task.objects.filter(pk=task_id).values_list("payload", flat=True).first() or {}).get(
            "keyword", ""
        )
    with transaction.atomic():
        conv, created = _get_or_create_locked(contact_id=contact_id, channel=channel)
        if created:
            _event(conv.pk, "opened", details_kind=kind)
        is_keyword = keyword in KEYWORDS
        fields: set[str] = set()
        if task_id:
            ConversationTask.objects.get_or_create(task_id=task_id, defaults={"conversation": conv})
        if is_keyword:
            _event(conv.pk, "consent_keyword", keyword=keyword)
            if conv.status == C.RESOLVED and task_id:
                _finish_tasks(
                    conv, actor="conversations", reason="consent keyword on a resolved conversation"
                )
        else:
            if conv.status == C.RESOLVED:
                conv.status, conv.resolved_at = C.OPEN, None
                fields |= {"status", "resolved_at"}
                _event(conv.pk, "reopened")
            elif conv.status in (C.SNOOZED, C.PENDING):
                _event(conv.pk, "woken" if conv.status == C.SNOOZED else "customer_replied")
                conv.status, conv.snoozed_until = C.OPEN, None
                fields |= {"status", "snoozed_until"}
            conv.unread += 1
            conv.last_customer_message_at = occurred_at
            conv.first_customer_message_at = conv.first_customer_message_at or occurred_at
            fields |= {"unread", "last_customer_message_at", "first_customer_message_at"}
            if conv.waiting_since is None:
                conv.waiting_since = occurred_at
                limit = (
                    settings.CONVERSATION_FIRST_RESPONSE_SECONDS
                    if conv.first_response_at is None
                    else settings.CONVERSATION_NEXT_RESPONSE_SECONDS
                )
                conv.sla_due_at = occurred_at + timedelta(seconds=limit)
                conv.sla_breached = False
                fields |= {"waiting_since", "sla_due_at", "sla_breached"}
        if fields:
            conv.save(update_fields=[*fields, "updated_at"])
        publish_conversation_update(conv.pk, reason="message")
    if not is_keyword and conv.assignee_id is None and settings.CONVERSATION_AUTO_ASSIGN:
        conversation_auto_assign(conversation_id=conv.pk)
    return conv


def _record_outbound(*, contact_id: Any, channel: str, occurred_at: datetime) -> Conversation | None:
    # A campaign's contacts have no conversation (outbound alone opens none; synthetic contacts
    # never get one): an unlocked look first, the lock only when there is something to update.
    if not Conversation.objects.filter(contact_id=contact_id, channel=channel).exists():
        return None
    with transaction.atomic():
        conv = Conversation.objects.select_for_update().filter(contact_id=contact_id, channel=channel).first()
        if conv is None:
            return None
        conv.last_reply_at = occurred_at
        fields = {"last_reply_at"}
        if conv.waiting_since is not None:
            if conv.first_response_at is None:
                conv.first_response_at = occurred_at
                start = conv.first_customer_message_at or conv.waiting_since
                conv.first_response_seconds = max(0, int((occurred_at - start).total_seconds()))
                fields |= {"first_response_at", "first_response_seconds"}
            conv.waiting_since, conv.sla_due_at, conv.sla_breached = None, None, False
            fields |= {"waiting_since", "sla_due_at", "sla_breached"}
        conv.save(update_fields=[*fields, "updated_at"])
        publish_conversation_update(conv.pk, reason="reply")
    return conv


# --- Assignment ---------------------------------------------------------------------------------


def conversation_claim(*, conversation_id: int, user: Any) -> bool:
    """Take an unassigned conversation. One conditional UPDATE: of two operators claiming
    at once, exactly one gets the row; the other gets False."""
    now = timezone.now()
    won = (
        Conversation.objects.filter(pk=conversation_id, assignee__isnull=True, status__in=ACTIVE).update(
            assignee=user, assigned_at=now, updated_at=now
        )
        == 1
    )
    if won:
        _event(conversation_id, "assigned", _actor(user), to=user.get_username(), how="claim")
    return won


def conversation_assign(*, conversation_id: int, to: Any, by: Any) -> None:
    """Assign or transfer to another operator (a supervisor's action; the holder may transfer
    their own). ``to`` None unassigns."""
    with transaction.atomic():
        conv = _locked(conversation_id)
        if conv.status == C.RESOLVED:
            raise ConversationRefused("This conversation is resolved.")
        if to is not None and not (to.is_active and to.has_perm("dashboard.work_inbox")):
            raise ConversationRefused(f"{to.get_username()} cannot work conversations.")
        previous = conv.assignee.get_username() if conv.assignee_id else ""
        conv.assignee, conv.assigned_at = to, timezone.now() if to else None
        conv.save(update_fields=["assignee", "assigned_at", "updated_at"])
        _event(conv.pk, "transferred" if previous else "assigned", _actor(by),
               to=to.get_username() if to else "", previous=previous, how="manual")  # fmt: skip


def _active_count() -> Count:
    return Count("user__assigned_conversations", filter=Q(user__assigned_conversations__status__in=ACTIVE))


def _workers() -> Any:
    """Who may be given conversations: the work_inbox permission (through a group or their
    own) or a superuser; a subquery, so counting stays one row per operator."""
    from django.contrib.auth import get_user_model

    perm = Q(groups__permissions__codename="work_inbox") | Q(user_permissions__codename="work_inbox")
    return get_user_model().objects.filter(perm | Q(is_superuser=True)).values("pk")


def _free_operators() -> Any:
    """Who may be given a conversation now: available, active staff with the permission to work
    conversations, under their capacity; assigned least recently first (round robin)."""
    return (
        Operator.objects.filter(available=True, user__is_active=True, user__is_staff=True)
        .filter(user__in=_workers())
        .annotate(active=_active_count())
        .filter(active__lt=F("capacity"))
        .select_related("user")
        .order_by(F("last_assigned_at").asc(nulls_first=True), "pk")
    )


def _reserve(*, operator: Operator, conversation_id: int) -> bool:
    """Inside a transaction: lock the operator's row (SELECT … FOR UPDATE) and count their
    active conversations again (this one aside) under that lock. True: they still have room
    and stay locked until the caller's transaction ends."""
    capacity = (
        Operator.objects.select_for_update()
        .filter(pk=operator.pk, available=True)
        .values_list("capacity", flat=True)
        .first()
    )
    if capacity is None:  # went away meanwhile
        return False
    active = (
        Conversation.objects.filter(assignee_id=operator.user_id, status__in=ACTIVE)
        .exclude(pk=conversation_id)
        .count()
    )
    return active < capacity


def conversation_auto_assign(*, conversation_id: int) -> Any:
    """Round robin: the available operator under capacity assigned least recently gets it.
    Returns the user, or None when nobody is free (away operators get nothing).

    The capacity check is atomic: the operator's row is locked (SELECT … FOR UPDATE) and their
    active conversations counted again under that lock before the claim, so two conversations
    auto-assigned at once never take an operator past their capacity."""
    for operator in list(_free_operators()[:5]):
        with transaction.atomic():
            if not _reserve(operator=operator, conversation_id=conversation_id):
                continue  # another assignment filled them meanwhile
            if conversation_claim(conversation_id=conversation_id, user=operator.user):
                Operator.objects.filter(pk=operator.pk).update(last_assigned_at=timezone.now())
                return operator.user
            return None  # someone else took the conversation: nothing to assign
    return None


def conversation_handoff_assign(*, conversation_id: int, actor: str) -> Operator | None:
    """A voice hand-off needs a person now: the same pick as auto-assignment (available, under
    capacity, allowed to work conversations, round robin) under the same row lock, so two
    hand-offs at once never ring one operator past their capacity. The conversation is given
    to that operator (whoever held it before). None: nobody is free."""
    for operator in list(_free_operators()[:5]):
        with transaction.atomic():
            if not _reserve(operator=operator, conversation_id=conversation_id):
                continue
            now = timezone.now()
            Conversation.objects.filter(pk=conversation_id).update(
                assignee=operator.user, assigned_at=now, updated_at=now
            )
            Operator.objects.filter(pk=operator.pk).update(last_assigned_at=now)
            _event(conversation_id, "assigned", actor, to=operator.user.get_username(), how="handoff")
            return operator
    return None


def operator_set_availability(*, user: Any, available: bool, capacity: int | None = None) -> Operator:
    operator, _ = Operator.objects.get_or_create(user=user)
    operator.available = available
    fields = ["available"]
    if capacity is not None:
        operator.capacity = capacity
        fields.append("capacity")
    operator.save(update_fields=fields)
    return operator


# --- Working a conversation ---------------------------------------------------------------------


def conversation_mark_read(*, conversation_id: int, user: Any) -> None:
    """The assignee opened the conversation: its unread count goes to zero."""
    if Conversation.objects.filter(pk=conversation_id, assignee=user, unread__gt=0).update(
        unread=0, updated_at=timezone.now()
    ):
        publish_conversation_update(conversation_id, reason="read")


def conversation_label(*, conversation_id: int, user: Any, name: str, add: bool = True) -> None:
    from conversations.models import Label

    label = Label.objects.filter(name=name).first()
    if label is None:
        raise ConversationRefused(f"No label {name!r}: an admin creates labels.")
    conv = Conversation.objects.get(pk=conversation_id)
    (conv.labels.add if add else conv.labels.remove)(label)
    _event(conversation_id, "labelled" if add else "unlabelled", _actor(user), label=name)


VARIABLE = re.compile(r"{{\s*(contact|operator)\.(name|first_name|phone|email)\s*}}")


def render_variables(text: str, *, contact: Any, operator: Any = None) -> str:
    """A canned response's variables: ``{{ contact.name }}``, ``{{ contact.first_name }}``,
    ``{{ contact.phone }}``, ``{{ contact.email }}``, ``{{ operator.name }}``. Plain
    substitution (no template engine runs on what an admin typed); unknown ones stay as typed."""

    def value(match: re.Match) -> str:
        who, field = match.groups()
        if who == "operator":
            if operator is None:
                return ""
            full = operator.get_full_name() or operator.get_username()
            return full.split()[0] if field == "first_name" else full
        name = (getattr(contact, "name", "") or "").strip()
        if field == "first_name":
            return name.split()[0] if name else ""
        return str(getattr(contact, field, "") or "")

    return VARIABLE.sub(value, text)


def conversation_note(*, conversation_id: int, user: Any, body: str) -> PrivateNote:
    """A private note between operators. It is stored, never sent: no task is made of it."""
    body = (body or "").strip()
    if not body:
        raise ConversationRefused("Write the note first.")
    note = PrivateNote.objects.create(conversation_id=conversation_id, author=user, body=body[:5000])
    _event(conversation_id, "note", _actor(user), note=note.pk)
    return note


def whatsapp_window_open(contact: Any) -> bool:
    """WhatsApp allows free text only within 24 hours of the customer's last message."""
    last = contact.last_inbound_whatsapp_at
    return bool(last and timezone.now() - last < timedelta(hours=24))


def conversation_reply(
    *, conversation_id: int, user: Any, body: str = "", template: str = "", variables: dict | None = None
) -> Task:
    """Reply on the conversation's channel with an ``sms.send`` / ``whatsapp.send`` task (free
    text, or an approved WhatsApp template with its variables); the stored outbound message
    joins the conversation and stops its waiting clock."""
    conv = Conversation.objects.select_related("contact").get(pk=conversation_id)
    if conv.assignee_id != user.pk:
        raise ConversationRefused("Take the conversation before replying.")
    if conv.status == C.RESOLVED:
        raise ConversationRefused("This conversation is resolved.")
    if conv.channel not in ("sms", "whatsapp"):
        raise ConversationRefused(f"Replies on {conv.channel} are not sent from here.")
    if consent_status(contact_id=conv.contact_id, channel=conv.channel) == ConsentStatus.OPTED_OUT:
        raise ConversationRefused(f"{conv.contact} opted out of {conv.channel}.")
    to = conv.contact.phone if conv.channel == "sms" else conv.contact.whatsapp
    if not to:
        raise ConversationRefused("No address to reply to.")
    if template:
        if conv.channel != "whatsapp":
            raise ConversationRefused("Templates are for WhatsApp.")
        payload: dict[str, Any] = {"to": to, "template": template[:100], "variables": dict(variables or {})}
    else:
        body = (body or "").strip()
        if not body:
            raise ConversationRefused("Write a reply first.")
        if conv.channel == "whatsapp" and not whatsapp_window_open(conv.contact):
            raise ConversationRefused(
                "Outside WhatsApp's 24-hour window: only an approved template can be sent."
            )
        payload = {"to": to, "body": body}
    parent = conv.held_tasks.order_by("-created_at").values_list("task_id", flat=True).first()
    reply, _ = task_create(type=f"{conv.channel}.send", payload=payload,
                           contact_id=conv.contact_id, source=f"console:{user.get_username()}",
                           correlation_id=f"conversation-{conv.pk}", parent_id=parent)  # fmt: skip
    _event(conv.pk, "replied", _actor(user), task=str(reply.id))
    return reply


def conversation_snooze(*, conversation_id: int, user: Any, until: datetime) -> None:
    if until <= timezone.now():
        raise ConversationRefused("Snooze until a time in the future.")
    done = Conversation.objects.filter(pk=conversation_id, status__in=ACTIVE).update(
        status=C.SNOOZED, snoozed_until=until, updated_at=timezone.now()
    )
    if not done:
        raise ConversationRefused("This conversation is resolved.")
    _event(conversation_id, "snoozed", _actor(user), until=until.isoformat())


def conversations_wake_snoozed(*, now: datetime | None = None) -> int:
    """Snoozed conversations whose time has come are open again (Celery beat, or
    ``manage.py conversations_sweep``)."""
    now = now or timezone.now()
    woken = 0
    for pk in Conversation.objects.filter(status=C.SNOOZED, snoozed_until__lte=now).values_list(
        "pk", flat=True
    ):
        if Conversation.objects.filter(pk=pk, status=C.SNOOZED).update(
            status=C.OPEN, snoozed_until=None, updated_at=now
        ):
            _event(pk, "woken", "system", why="snooze time")
            woken += 1
    return woken


def conversations_flag_sla(*, now: datetime | None = None) -> int:
    """Flag conversations left unanswered past their first/next response time."""
    now = now or timezone.now()
    ids = list(
        Conversation.objects.filter(
            sla_breached=False,
            sla_due_at__lte=now,
            waiting_since__isnull=False,
            status__in=(C.OPEN, C.PENDING),
        ).values_list("pk", flat=True)
    )
    flagged = Conversation.objects.filter(pk__in=ids, sla_breached=False).update(sla_breached=True)
    for pk in ids:
        _event(pk, "sla_breached", "system")
    return flagged


def conversation_resolve(*, conversation_id: int, user: Any) -> int:
    """Resolve: the conversation's inbound tasks reach a final state (each with its task event),
    so retention covers them. Returns how many tasks were finished."""
    actor = _actor(user)
    with transaction.atomic():
        conv = _locked(conversation_id)
        if conv.status == C.RESOLVED:
            return 0
        if conv.assignee_id not in (None, user.pk) and not user.has_perm("dashboard.supervise"):
            raise ConversationRefused("Another operator holds this conversation.")
        now = timezone.now()
        conv.status, conv.resolved_at, conv.snoozed_until = C.RESOLVED, now, None
        conv.waiting_since, conv.sla_due_at, conv.sla_breached, conv.unread = None, None, False, 0
        conv.save(update_fields=["status", "resolved_at", "snoozed_until", "waiting_since", "sla_due_at",
                                 "sla_breached", "unread", "updated_at"])  # fmt: skip
        finished = _finish_tasks(conv, actor=actor, reason="resolved")
        _event(conv.pk, "resolved", actor, tasks=finished)
        audit_record(actor=actor, action=AuditAction.OPERATOR_ACTION, object_type="conversation",
                     object_id=conv.pk, details={"action": "resolve", "tasks": finished})  # fmt: skip
    return finished


def _finish_tasks(conv: Conversation, *, actor: str, reason: str) -> int:
    """Succeeded when an agent parked the task (it was answered); cancelled — with the reason —
    when it never got that far. Either is final, with its event."""
    held = list(conv.held_tasks.filter(finished=False).select_related("task"))
    for hold in held:
        task = hold.task
        if task.status not in FINAL:
            target = (
                TaskStatus.SUCCEEDED
                if task.status in (TaskStatus.DISPATCHED, TaskStatus.IN_PROGRESS)
                else TaskStatus.CANCELLED
            )
            with contextlib.suppress(IllegalTransition):
                task_transition(task_id=task.id, to=target, actor=actor,
                                details={"action": "resolve", "conversation": conv.pk, "reason": reason},
                                **({"error_code": "resolved", "error_message": reason}
                                   if target == TaskStatus.CANCELLED else {}))  # fmt: skip
    ConversationTask.objects.filter(pk__in=[h.pk for h in held]).update(finished=True)
    return len(held)


def conversations_finish_late_parked(*, limit: int = 500) -> int:
    """An inbound task parked (in progress) after its conversation was resolved is finished
    (the sweep's safety net; resolve finishes whatever is parked at that time)."""
    done = 0
    late = ConversationTask.objects.filter(finished=True, task__status=TaskStatus.IN_PROGRESS).values_list(
        "task_id", flat=True
    )[:limit]
    for task_id in late:
        with contextlib.suppress(IllegalTransition):
            task_transition(task_id=task_id, to=TaskStatus.SUCCEEDED, actor="conversations",
                            details={"action": "resolve", "reason": "parked after resolve"})  # fmt: skip
            done += 1
    return done


def conversations_sweep(*, now: datetime | None = None) -> dict[str, int]:
    """The periodic job: wake snoozed, flag SLA breaches, finish late-parked tasks."""
    result = {
        "woken": conversations_wake_snoozed(now=now),
        "sla_flagged": conversations_flag_sla(now=now),
        "late_tasks_finished": conversations_finish_late_parked(),
    }
    if any(result.values()):
        log.info("conversations.swept", **result)
    return result
