"""Operator actions on live calls. The console reaches the voice agent only through the
orchestrator: the agent registers a ``hang_up`` task action (orchestrator.registry)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from dossiers.models import AuditAction
from dossiers.services import audit_record
from orchestrator.models import Task
from orchestrator.registry import NoSuchAction, run_task_action
from orchestrator.services import task_cancel, task_transition
from orchestrator.states import FINAL

log = logging.getLogger(__name__)


class HangUpFailed(Exception):
    """The provider could not be asked to end the call; the message says why."""


@dataclass(frozen=True)
class HangUp:
    task: Task
    outcome: str  # asked | not_placed | finished


def call_hang_up(*, task_id: str, actor: str) -> HangUp:
    """The Hang up button. Asks the voice provider to end the call (Twilio: call update to
    ``completed``); its ``completed`` callback then moves the task to ``cancelled``. A call
    not placed yet is cancelled here. Records a task event and an audit entry either way;
    raises HangUpFailed (nothing changed) when the provider refused or was unreachable."""
    task = Task.objects.get(id=task_id)
    if task.status in FINAL:
        return HangUp(task, "finished")
    try:
        outcome = run_task_action(task, "hang_up", actor=actor)
    except NoSuchAction:
        outcome = "not_placed"
    except Exception as exc:
        log.warning("hang-up of call task %s failed at the provider", task_id, exc_info=True)
        raise HangUpFailed(f"the voice provider did not end the call: {exc}") from exc
    audit_record(actor=actor, action=AuditAction.OPERATOR_ACTION, object_type="task", object_id=task.id,
                 details={"action": "hang_up", "outcome": outcome})  # fmt: skip
    if outcome == "not_placed":
        task = task_cancel(
            task_id=task_id, actor=actor, reason="hung up by operator before the call was placed"
        ).task
    else:  # the state changes when the provider confirms; the event says who asked
        task = task_transition(task_id=task_id, to=task.status, actor=actor,
                               details={"action": "hang_up", "provider_asked": True}).task  # fmt: skip
    return HangUp(task, outcome)
