from __future__ import annotations

from django.conf import settings
from rest_framework import exceptions, status
from rest_framework.parsers import JSONParser

from comms_platform import jsonsafe


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "payload_too_large"
    default_detail = "The request body is too large."


class BoundedJSONParser(JSONParser):
    """JSON with a size limit checked before the body is read into memory."""

    limit_setting = "API_MAX_BODY_BYTES"  # a bulk endpoint (broadcasts) names a larger one

    def parse(self, stream, media_type=None, parser_context=None):
        limit = getattr(settings, self.limit_setting)
        request = (parser_context or {}).get("request")
        declared = int(request.META.get("CONTENT_LENGTH") or 0) if request is not None else 0
        if declared > limit:
            raise PayloadTooLarge(f"The request body is {declared} bytes; the limit is {limit}.")
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise PayloadTooLarge(f"The request body is over the limit of {limit} bytes.")
        try:
            # NaN, Infinity, 1e400 and deep nesting are refused here (PostgreSQL's jsonb and
            # Python's recursion limit would turn them into a 500 further down).
            data = jsonsafe.loads(raw.decode(settings.DEFAULT_CHARSET))
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise exceptions.ParseError(f"Malformed JSON: {exc}") from None
        if b"\\u0000" in raw and _has_nul(data):
            # PostgreSQL cannot store NUL in text or jsonb: refuse it here, not with a 500.
            raise exceptions.ParseError("Malformed JSON: strings must not contain NUL (\\u0000) characters.")
        return data


def _has_nul(value) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False
