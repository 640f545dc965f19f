"""Remote (dispatch-only) agents: the task is POSTed, signed, to the agent's URL.

The agent answers 2xx to accept it and then reports progress with
``PATCH /api/tasks/<id>/`` using an API key of the ``agent`` role. A 429, a 5xx or a
connection problem is retried; any other 4xx fails the task.
"""

from __future__ import annotations

import json

import requests
from django.conf import settings

from comms_platform import outbound, signing
from orchestrator import registry
from orchestrator.errors import PermanentError, TransientError
from orchestrator.models import Task


def task_document(task: Task) -> dict:
    return {
        "id": str(task.id),
        "type": task.type,
        "channel": task.channel,
        "status": task.status,
        "attempt": task.attempts,
        "contact": str(task.contact_id) if task.contact_id else None,
        "correlation_id": task.correlation_id,
        "payload": task.payload,
        "priority": task.priority,
        "created_at": task.created_at.isoformat(),
    }


def deliver(task: Task) -> None:
    route = registry.get_route(task.type)
    url = (route.url if route else "") or settings.REMOTE_AGENT_URLS.get(task.agent, "")
    if not url:
        raise PermanentError(f"remote agent {task.agent!r} has no URL configured", code="agent_misconfigured")
    body = json.dumps(
        {"task": task_document(task), "callback_url": f"{settings.PUBLIC_BASE_URL}/api/tasks/{task.id}/"},
        separators=(",", ":"),
    ).encode()
    headers = {
        "Content-Type": "application/json",
        signing.HEADER: signing.sign(body, settings.REMOTE_AGENT_SECRETS[0]),
        "X-Comms-Task-Id": str(task.id),
        # The same task may be delivered twice (a retry after a timeout): agents de-duplicate on it.
        "Idempotency-Key": str(task.id),
    }
    try:
        # Checked again here, after DNS (the row was checked at save); a redirect is not
        # followed: the signed body is never re-posted to another address.
        response = outbound.post(
            url, data=body, headers=headers, timeout=settings.REMOTE_AGENT_TIMEOUT_SECONDS
        )
    except outbound.OutboundRefused as exc:
        raise PermanentError(f"remote agent URL refused: {exc}", code="agent_url_refused") from None
    except requests.RequestException as exc:
        raise TransientError(
            f"remote agent unreachable: {type(exc).__name__}", code="agent_unreachable"
        ) from exc
    if response.status_code == 429 or response.status_code >= 500:
        retry_after = _retry_after(response.headers.get("Retry-After"))
        raise TransientError(
            f"remote agent answered {response.status_code}", code="agent_unavailable", retry_after=retry_after
        )
    if 300 <= response.status_code < 400:
        raise PermanentError(
            f"remote agent answered a redirect (HTTP {response.status_code}); redirects are not followed",
            code="agent_redirect",
        )
    if response.status_code >= 400:
        raise PermanentError(
            f"remote agent refused the task: HTTP {response.status_code}", code="agent_refused"
        )


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None
