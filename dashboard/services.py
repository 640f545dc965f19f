"""Writes of the console's task actions (retry, cancel); conversations have their own services
(``conversations.services``)."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from dossiers.models import AuditAction
from dossiers.services import audit_record
from orchestrator.models import Task
from orchestrator.services import task_cancel, task_retry, task_transition

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
