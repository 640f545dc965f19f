"""The List-Unsubscribe target (RFC 8058 one-click: the mail client POSTs; a person GETs)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, HttpResponseNotFound
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from agents.email.services import email_unsubscribe


@csrf_exempt  # mail clients POST without a session (RFC 8058); the signed token is the authority
@require_http_methods(["GET", "POST"])
def unsubscribe(request: HttpRequest, token: str) -> HttpResponse:
    if request.method == "GET":
        return render(request, "email/unsubscribe.html", {"done": False})
    if not email_unsubscribe(token=token):
        return HttpResponseNotFound("Unknown unsubscribe link.")
    return render(request, "email/unsubscribe.html", {"done": True})
