"""The agent kit's status check: a task still ``in_progress`` past its channel's age lost its
final callback, so the agent asks the provider and applies what it says as the callback would.

One order of steps for every agent whose provider reports by callback (messaging, voice):

    the task still in progress? → the provider's id (else fail ``no_provider_id``) → ask the
    provider (observed) → no such record: fail ``not_found_at_provider`` → a final status:
    apply it → still not final after ``STATUS_CHECK_GIVE_UP_SECONDS``: fail ``no_final_status``

An agent subclasses ``StatusCheck`` and fills the hooks; the orchestrator's sweep reaches it
through the ``status_check`` registry hook.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.utils import timezone

from orchestrator.metrics import observe_provider_call
from orchestrator.models import Task
from orchestrator.services import task_fail
from orchestrator.states import TaskStatus


class StatusCheck:
    agent = ""  # the actor is "agent:<agent> (status check)"
    noun = "message"  # what the provider keeps: "message", "call"
    operation = "fetch"  # the provider metric's operation label, e.g. "messages.fetch"

    def run(self, task_id: Any) -> str:
        task = Task.objects.filter(id=task_id, status=TaskStatus.IN_PROGRESS).first()
        if task is None:
            return "not_in_progress"
        actor = f"agent:{self.agent} (status check)"
        sid = self.provider_sid(task)
        if not sid:
            task_fail(task_id=task.id, code="no_provider_id", actor=actor,
                      message=f"in progress without a provider {self.noun} id: nothing to ask the provider")  # fmt: skip
            return "failed:no_provider_id"
        provider = self.provider()
        with observe_provider_call(provider.name, self.operation):
            status, detail = self.fetch(provider, sid)
        if status == "not_found":
            task_fail(task_id=task.id, code="not_found_at_provider", actor=actor,
                      message=f"the provider has no {self.noun} {sid}")  # fmt: skip
            return "failed:not_found_at_provider"
        if self.is_final(status):
            return f"applied:{self.apply(task, sid=sid, status=status, detail=detail, actor=actor)}"
        if (timezone.now() - task.created_at).total_seconds() > settings.STATUS_CHECK_GIVE_UP_SECONDS:
            task_fail(task_id=task.id, code="no_final_status", actor=actor,
                      message=f"the provider still says {status!r}: no final status came")  # fmt: skip
            return "failed:no_final_status"
        return f"still:{status}"

    # --- hooks ------------------------------------------------------------------------------

    def provider_sid(self, task: Task) -> str:
        """The provider's id of what the task sent; "" when there is none to ask about."""
        raise NotImplementedError

    def provider(self) -> Any:
        raise NotImplementedError

    def fetch(self, provider: Any, sid: str) -> tuple[str, Any]:
        """(status, detail) at the provider; ("not_found", …) when it has no such record."""
        raise NotImplementedError

    def is_final(self, status: str) -> bool:
        raise NotImplementedError

    def apply(self, task: Task, *, sid: str, status: str, detail: Any, actor: str) -> str:
        """Apply the final status as its callback would; returns the outcome label."""
        raise NotImplementedError
