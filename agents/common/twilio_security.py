"""Verify ``X-Twilio-Signature`` with Twilio's own validator (twilio-python RequestValidator).

The signed URL is the one Twilio called: behind a proxy (Render) we rebuild it from
``PUBLIC_BASE_URL`` and the request path, never from the internal host. Several auth
tokens are accepted (the current one first, then TWILIO_PREVIOUS_AUTH_TOKENS) so a token
can be rotated without losing callbacks.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest
from twilio.request_validator import RequestValidator, get_signature_algorithm

SIGNATURE_HEADER = "HTTP_X_TWILIO_SIGNATURE"


def auth_tokens() -> list[str]:
    return [t for t in [settings.TWILIO_AUTH_TOKEN, *settings.TWILIO_PREVIOUS_AUTH_TOKENS] if t]


def public_url(request: HttpRequest) -> str:
    """The URL as the provider saw it: PUBLIC_BASE_URL + path + query string."""
    return settings.PUBLIC_BASE_URL + request.get_full_path()


def is_valid_twilio_request(request: HttpRequest, tokens: list[str] | None = None) -> bool:
    signature = request.META.get(SIGNATURE_HEADER, "")
    if not signature:
        return False
    url = public_url(request)
    content_type = request.META.get("CONTENT_TYPE", "")
    # Form posts are signed over the sorted parameters; JSON bodies carry bodySHA256 in
    # the URL and are signed over the URL alone (the validator checks the body hash).
    params = request.body.decode() if content_type.startswith("application/json") else request.POST
    # With a Webhooks Rule, Twilio says which HMAC it used (HMAC_SHA256) in this header.
    algorithm = get_signature_algorithm(request.META.get("HTTP_X_TWILIO_WEBHOOKS_SIGNATURE_SETTINGS"))
    return any(
        RequestValidator(token).validate(url, params, signature, algorithm=algorithm)
        for token in tokens or auth_tokens()
    )
