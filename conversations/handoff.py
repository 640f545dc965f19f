"""Voice hand-off to a person: the hooks the voice agent calls through the orchestrator's
registry (it imports nothing of this app), and the console's "Take call".

``call.handoff.route``: the caller asked for a person. The contact's voice conversation holds
the ``call.handoff`` task, with the AI's reason and summary as its first event; an operator is
picked exactly as auto-assignment picks (available, under capacity, allowed to work
conversations, round robin, under the operator's row lock) and the conversation is theirs.
The answer says how the call reaches them: ``{"transfer": "phone", "phone": …}`` (a <Dial> to
their phone) or ``{"transfer": "console", "queue": …}`` (the caller waits in a Twilio queue
until the operator clicks *Take call*: ``handoff_take_call`` → ``call.handoff.answer``).
None: nobody is available, the conversation waits for a callback.
``call.handoff.finish`` / ``call.handoff.no_answer``: the hand-off task reaches a final state.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

from django.conf import settings
from django.utils import timezone

from conversations.models import Conversation, ConversationTask, Label, Operator
from conversations.services import (
    ConversationRefused,
    _actor,
    _event,
    conversation_claim,
    conversation_handoff_assign,
    conversation_record,
)
from orchestrator import registry
from orchestrator.models import Task
from orchestrator.services import task_transition
from orchestrator.states import FINAL, IllegalTransition, TaskStatus

CALLBACK_LABEL = "callback"


def _task(task_id: Any) -> Task | None:
    """The ``call.handoff`` task, or None for an id that is not one (never an exception)."""
    try:
        uuid.UUID(str(task_id))
    except ValueError:
        return None
    return Task.objects.filter(pk=task_id, type="call.handoff").first()


def _handoff(task_id: Any) -> tuple[Task | None, Conversation | None]:
    task = _task(task_id)
    if task is None:
        return None, None
    hold = ConversationTask.objects.filter(task=task).select_related("conversation").first()
    return task, hold.conversation if hold else None


def queue_name(handoff_task_id: Any) -> str:
    """The hand-off's own Twilio queue (a name of 64 characters at most)."""
    return f"handoff-{handoff_task_id}"


@registry.hook("call.handoff.route")
def handoff_route(*, handoff_task_id: Any) -> dict[str, str] | None:
    task = _task(handoff_task_id)
    if task is None or task.contact_id is None:
        return None
    conv = conversation_record(contact_id=task.contact_id, channel="voice", direction="inbound",
                               occurred_at=timezone.now(), task_id=task.pk, kind="call")  # fmt: skip
    if conv is None:
        return None
    payload = task.payload or {}
    _event(conv.pk, "handoff", "agent:voice", reason=str(payload.get("reason", ""))[:500],
           summary=str(payload.get("summary", ""))[:2000], call_task=str(payload.get("call_task", "")))  # fmt: skip
    operator = conversation_handoff_assign(conversation_id=conv.pk, actor="agent:voice")
    if operator is None:
        return None
    if operator.phone and settings.VOICE_HANDOFF_TRANSFER == "phone":
        _event(conv.pk, "handoff_dialling", "agent:voice", to=operator.user.get_username())
        return {"transfer": "phone", "phone": operator.phone, "operator": operator.user.get_username()}
    _event(conv.pk, "handoff_queued", "agent:voice", to=operator.user.get_username())
    return {"transfer": "console", "queue": queue_name(task.pk), "operator": operator.user.get_username()}


def handoff_waiting(conv: Conversation) -> Task | None:
    """The conversation's hand-off whose caller waits in the console queue (not final)."""
    if conv.channel != "voice":
        return None
    last = conv.events.filter(kind__in=("handoff_queued", "handoff_dialling", "handoff_taken")).last()
    if last is None or last.kind != "handoff_queued":
        return None
    return (
        Task.objects.filter(type="call.handoff", conversation_hold__conversation=conv)
        .exclude(status__in=FINAL)
        .order_by("-created_at")
        .first()
    )


def handoff_take_call(*, conversation_id: int, user: Any) -> str:
    """The console's *Take call*: the operator holding the conversation (or anyone, when it is
    unassigned) has the waiting caller put through to them. The voice agent asks the provider
    to dequeue the caller to the operator's leg (``call.handoff.answer``)."""
    conv = Conversation.objects.get(pk=conversation_id)
    task = handoff_waiting(conv)
    if task is None:
        raise ConversationRefused("No caller is waiting for this conversation.")
    if conv.assignee_id is None and not conversation_claim(conversation_id=conv.pk, user=user):
        conv.refresh_from_db()
    if conv.assignee_id not in (None, user.pk):
        raise ConversationRefused(f"The call is for {conv.assignee.get_username()}.")
    # The operator's phone rings when they have one (no softphone needed); else their client leg.
    phone = Operator.objects.filter(user=user).values_list("phone", flat=True).first() or ""
    outcome = registry.call_hook(
        "call.handoff.answer", handoff_task_id=task.pk, operator=user.get_username(), phone=phone
    )
    if outcome != "asked":
        raise ConversationRefused(
            "The caller is no longer waiting."
            if outcome == "gone"
            else "The call is not in the queue yet: try again."
        )
    _event(conv.pk, "handoff_taken", _actor(user), to=user.get_username())
    return outcome


@registry.hook("call.handoff.finish")
def handoff_finish(*, handoff_task_id: Any, outcome: str) -> None:
    """``connected`` (the operator answered) or ``callback`` (nobody: the conversation waits,
    unassigned and labelled ``callback``). The hand-off task succeeds with that outcome."""
    task, conv = _handoff(handoff_task_id)
    if task is None:
        return
    if conv is not None and outcome == "callback":
        label, _ = Label.objects.get_or_create(name=CALLBACK_LABEL, defaults={"color": "#b45309"})
        conv.labels.add(label)
        Conversation.objects.filter(pk=conv.pk).update(assignee=None, assigned_at=None)
        _event(conv.pk, "callback_requested", "agent:voice")
    elif conv is not None:
        _event(conv.pk, "handoff_connected", "agent:voice")
    if task.status not in FINAL:
        with contextlib.suppress(IllegalTransition):
            task_transition(task_id=task.pk, to=TaskStatus.SUCCEEDED, actor="agent:voice",
                            details={"handoff": outcome}, result={"outcome": outcome})  # fmt: skip
    ConversationTask.objects.filter(task=task).update(finished=True)


@registry.hook("call.handoff.no_answer")
def handoff_no_answer(*, handoff_task_id: Any, dial_status: str = "") -> None:
    _task, conv = _handoff(handoff_task_id)
    if conv is not None:
        _event(conv.pk, "handoff_unanswered", "agent:voice", dial_status=dial_status)
    handoff_finish(handoff_task_id=handoff_task_id, outcome="callback")
