"""Who may do what through the API: a key's scopes, or a signed-in person's permissions.

Staff alone grants nothing: a session needs the Django permission each endpoint names
(the role groups of dashboard/access.py hold them). A key holds scopes instead
(``orchestrator.models.ApiKey``). Every refusal is a 403 that says what was missing; the
``AuditRefusals`` middleware records it.
"""

from __future__ import annotations

from django.db.models import QuerySet
from django.http import Http404
from rest_framework import exceptions, permissions
from rest_framework.request import Request

from orchestrator import registry
from orchestrator.api.auth import ApiClient
from orchestrator.models import Task

VIEW_TASK = "orchestrator.view_task"
ADD_TASK = "orchestrator.add_task"
CHANGE_TASK = "orchestrator.change_task"


def deny(request: Request, needed: str, message: str | None = None) -> exceptions.PermissionDenied:
    """A 403 naming what was missing (also kept on the request for the audit row)."""
    request._request.refused_permission = needed
    return exceptions.PermissionDenied(message or f"This needs {needed}.")


def key_of(request: Request) -> ApiClient | None:
    return request.user if isinstance(request.user, ApiClient) else None


def require_perm(request: Request, perm: str) -> None:
    """A signed-in person must hold ``perm``; keys are checked by their scopes elsewhere."""
    if key_of(request) is None and not request.user.has_perm(perm):
        raise deny(request, perm)


# --- Tasks ----------------------------------------------------------------------------------


def tasks_visible(request: Request, qs: QuerySet[Task]) -> QuerySet[Task]:
    """The tasks this caller may list: a client key its own (all with ``all_tasks``), an agent
    key those assigned to its agent, a person with ``orchestrator.view_task`` every one."""
    key = key_of(request)
    if key is None:
        require_perm(request, VIEW_TASK)
        return qs
    if key.is_agent:
        return qs.filter(agent=key.agent) if key.agent else qs.none()
    return qs if key.all_tasks else qs.filter(source=key.source)


def task_check(request: Request, task: Task, *, write: bool = False) -> None:
    """Another client's task is a 404 (its existence is not ours to tell); another agent's
    task is a 403 (the agent was sent its id)."""
    key = key_of(request)
    if key is None:
        require_perm(request, CHANGE_TASK if write else VIEW_TASK)
        return
    if key.is_agent:
        if not key.agent:
            raise deny(
                request, "agent_registration", "This agent key is bound to no remote agent registration."
            )
        if task.agent != key.agent:
            raise deny(
                request, f"agent:{task.agent or '-'}", "This task is not assigned to this key's agent."
            )
        return
    if not key.all_tasks and task.source != key.source:
        raise Http404


def task_create_check(request: Request, task_type: str) -> None:
    if registry.is_internal(task_type):
        raise deny(
            request, f"type:{task_type}", f"{task_type} tasks are created by the platform, not the API."
        )
    key = key_of(request)
    if key is None:
        require_perm(request, ADD_TASK)
    elif not key.may_create(task_type):
        raise deny(request, f"type:{task_type}", f"This API key may not create {task_type} tasks.")


# --- Contacts and dossiers -----------------------------------------------------------------


class DossierAccess(permissions.BasePermission):
    """``view.dossier_access = {"GET": ("dossiers.view_contact", "read"), ...}``: per method,
    the person's permission and the key's contact scope (``read`` or ``write``)."""

    def has_permission(self, request: Request, view) -> bool:
        needed = getattr(view, "dossier_access", {}).get(request.method)
        if needed is None:
            return True  # method not allowed: DRF answers 405
        perm, scope = needed
        key = key_of(request)
        if key is None:
            require_perm(request, perm)
        elif not key.may_contacts(scope):
            raise deny(request, f"contacts:{scope}", f"This API key may not {scope} contacts.")
        return True
