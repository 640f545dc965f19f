"""Voice hand-off to a person: the hooks the voice agent calls through the orchestrator's
registry (it imports nothing of this app).

``call.handoff.route``: the caller asked for a person. The contact's voice conversation holds
the ``call.handoff`` task, with the AI's reason and summary as its first event; the available
operator (with a phone, under capacity, assigned least recently) gets it and their number is
returned for the <Dial>. None: nobody is available, the conversation waits for a callback.
``call.handoff.finish`` / ``call.handoff.no_answer``: the hand-off task reaches a final state.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

from django.db import transaction
from django.utils import timezone

from conversations.models import Conversation, ConversationTask, Label, Operator
from conversations.services import _event, conversation_record, operator_pick_available
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


@registry.hook("call.handoff.route")
def handoff_route(*, handoff_task_id: Any) -> str | None:
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
    operator = operator_pick_available()
    if operator is None:
        return None
    with transaction.atomic():
        Conversation.objects.filter(pk=conv.pk).update(assignee=operator.user, assigned_at=timezone.now())
        Operator.objects.filter(pk=operator.pk).update(last_assigned_at=timezone.now())
        _event(conv.pk, "assigned", "agent:voice", to=operator.user.get_username(), how="handoff")
    return operator.phone


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
