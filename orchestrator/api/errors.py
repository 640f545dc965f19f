"""One error shape for the whole API: ``{"error": {"code", "message", "fields"?, ...}}``."""

from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

log = logging.getLogger(__name__)


def error_body(code: str, message: str, **extra) -> dict:
    return {"error": {"code": code, "message": message, **extra}}


def exception_handler(exc, context):
    if isinstance(exc, RequestDataTooBig):  # Django's DATA_UPLOAD_MAX_MEMORY_SIZE: a 413, not a 500
        from orchestrator.api.parsers import PayloadTooLarge

        exc = PayloadTooLarge()
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        log.exception("unhandled error in %s", context.get("view").__class__.__name__, exc_info=exc)
        return Response(
            error_body("internal_error", "Something went wrong on our side; it has been logged."),
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )
    if isinstance(exc, exceptions.ValidationError):
        detail = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        response.data = error_body(
            "invalid", _first_message(detail), fields=detail, problems=problems(detail)
        )
    elif isinstance(exc, exceptions.APIException):
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else exc.default_code
        if isinstance(exc, exceptions.ParseError):
            code = "malformed_json"
        response.data = error_body(code, str(exc.detail))
    return response


def problems(detail, path: str = "") -> list[dict[str, str]]:
    """Each field error as ``{"field": "payload.to", "code": ..., "message": ...}``: one code
    per problem, the same on every endpoint (``invalid_phone_number``, ``required``, …)."""
    found: list[dict[str, str]] = []
    if isinstance(detail, dict):
        for name, value in detail.items():
            found += problems(
                value, f"{path}.{name}" if path and name != "non_field_errors" else (path or name)
            )
    elif isinstance(detail, list):
        for item in detail:
            found += problems(item, path)
    else:
        found.append(
            {"field": path, "code": getattr(detail, "code", None) or "invalid", "message": str(detail)}
        )
    return found


def _first_message(detail) -> str:
    """A readable one-line summary of a validation error ("field: message")."""
    for field, messages in detail.items():
        first = messages[0] if isinstance(messages, list) and messages else messages
        if isinstance(first, dict):
            return f"{field}: {_first_message(first)}"
        return f"{field}: {first}" if field != "non_field_errors" else str(first)
    return "Invalid input."


def _json_for_api(request) -> bool:
    return request.path.startswith(("/api/", "/webhooks/"))


def handler404(request, exception=None):
    if _json_for_api(request):
        return JsonResponse(error_body("not_found", "No such resource."), status=404)
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)


def handler500(request):
    if _json_for_api(request):
        return JsonResponse(error_body("internal_error", "Something went wrong on our side."), status=500)
    from django.views.defaults import server_error

    return server_error(request)


def handler400(request, exception=None):
    if _json_for_api(request):
        return JsonResponse(error_body("bad_request", "The request could not be understood."), status=400)
    from django.views.defaults import bad_request

    return bad_request(request, exception)
