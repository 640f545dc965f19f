"""Verify ``X-Twilio-Signature`` with Twilio's own validator (twilio-python RequestValidator).

The signed URL is the one Twilio called: behind a proxy (Render) we rebuild it from
``PUBLIC_BASE_URL`` and the request path, never from the internal host. Several auth
tokens are accepted (the current one first, then TWILIO_PREVIOUS_AUTH_TOKENS) so a token
can be rotated without losing callbacks.
"""

from __future__ import annotations

import functools
import hmac
from urllib.parse import parse_qsl

from django.conf import settings
from django.http import HttpRequest, QueryDict
from twilio.request_validator import HMAC_SHA1, HMAC_SHA256, RequestValidator, get_signature_algorithm

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
    try:
        params = (
            request.body.decode() if content_type.startswith("application/json") else form_params(request)
        )
    except UnicodeDecodeError:
        return False
    # With a Webhooks Rule, Twilio says which HMAC it used (HMAC_SHA256) in this header.
    algorithm = get_signature_algorithm(request.META.get("HTTP_X_TWILIO_WEBHOOKS_SIGNATURE_SETTINGS"))
    validators = [request_validator(token) for token in tokens or auth_tokens()]
    if not isinstance(params, str) and algorithm.upper() in (HMAC_SHA1, HMAC_SHA256):
        # The common case first: Twilio signed the URL exactly as we configured it. One HMAC
        # with the validator's own compute_signature, where validate() always computes two
        # (with and without the port) and parses the URL twice. Anything else, including
        # every refusal, goes through validate() below.
        expected = signature.encode()
        for validator in validators:
            if hmac.compare_digest(validator.compute_signature(url, params, algorithm).encode(), expected):
                return True
    try:
        return any(
            validator.validate(url, params, signature, algorithm=algorithm) for validator in validators
        )
    except (TypeError, ValueError):  # a JSON body without bodySHA256 in the URL, and the like
        return False


def form_params(request: HttpRequest) -> QueryDict | dict[str, str]:
    """The form body's parameters, parsed once per request: a plain dict when no name
    repeats (every Twilio callback), which costs a fraction of Django's QueryDict on the
    busiest webhook; ``request.POST`` otherwise (and for anything that is not a plain
    urlencoded form, or has more fields than DATA_UPLOAD_MAX_NUMBER_FIELDS, which Django
    then refuses with a 400)."""
    cached = getattr(request, "_twilio_form", None)
    if cached is not None:
        return cached
    pairs = None
    # Only the common case: UTF-8 (declared or by default) that decodes cleanly. Any other
    # charset or stray bytes go to Django's QueryDict, which has its own rules for them.
    charset = (request.encoding or settings.DEFAULT_CHARSET).lower().replace("_", "-")
    if request.content_type == "application/x-www-form-urlencoded" and charset in ("utf-8", "utf8"):
        try:
            pairs = parse_qsl(
                request.body.decode("utf-8"),
                keep_blank_values=True,
                errors="strict",
                max_num_fields=settings.DATA_UPLOAD_MAX_NUMBER_FIELDS,
            )
        except ValueError:  # UnicodeDecodeError included: bytes or escapes that are not UTF-8
            pairs = None
    cached = dict(pairs) if pairs is not None else None
    if cached is None or len(cached) != len(pairs):
        cached = request.POST
    request._twilio_form = cached
    return cached


def form_dict(request: HttpRequest) -> dict[str, str]:
    """``form_params`` as a plain dict (the last value of a repeated name, as QueryDict.dict())."""
    params = form_params(request)
    return params.dict() if isinstance(params, QueryDict) else dict(params)


@functools.lru_cache(maxsize=8)
def request_validator(token: str) -> RequestValidator:
    """Twilio's validator for ``token``, built once (it also signs, for the simulated provider)."""
    return RequestValidator(token)
