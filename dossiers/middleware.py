"""Every refusal of a signed-in person or API key is a 403 *and* an audit row."""

from __future__ import annotations

from collections.abc import Callable

import structlog
from django.http import HttpRequest, HttpResponse

from dossiers.models import AuditAction
from dossiers.services import audit_record

log = structlog.get_logger(__name__)


class AuditRefusals:
    """Records ``AuditLog(action=denied)`` for each 403 answered to an authenticated caller:
    the console's permission checks, Django's admin model permissions, the API's scopes.
    Anonymous 403s (a bad webhook signature, a CSRF failure before login) are not audited:
    there is nobody to name. The path is kept without its query string (it may hold PII)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if response.status_code == 403:
            user = getattr(request, "user", None)
            if user is not None and getattr(user, "is_authenticated", False):
                self._record(request, user)
        return response

    @staticmethod
    def _record(request: HttpRequest, user) -> None:
        actor = user.get_username() if hasattr(user, "get_username") else str(user)
        try:
            audit_record(
                actor=actor,
                action=AuditAction.DENIED,
                object_type="path",
                object_id=request.path[:128],
                details={"method": request.method, "permission": getattr(request, "refused_permission", "")},
            )
        except Exception as exc:  # the refusal stands even if the audit row cannot be written
            log.warning("audit.denied_not_recorded", error=type(exc).__name__)
