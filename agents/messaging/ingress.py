"""The status callback's fast lane: a WSGI wrapper in front of Django for the one request the
platform receives most (three per message sent: queued, sent, delivered).

A well-formed, correctly signed Twilio status callback is verified (Twilio's own
``RequestValidator``), turned into the same event as ``StatusCallbackView`` makes
(``webhooks.status_event``), buffered (``webhook_buffer.push``: one XADD), counted and answered
204 here, without Django's request cycle: no request object, no middleware, no URL resolving,
no signals, no database connection. That is the part of a callback's cost that was not the
callback (docs/messaging.md, "Status callbacks", and docs/operations.md, "Capacity planning").

Anything else goes to Django unchanged (the body put back): another path or method, another
content type, a body that is not UTF-8 form data or carries NUL, a repeated field, a missing
or wrong signature, an HMAC-SHA256 signature (a Webhooks Rule), a request that is not a status
callback, no Redis or Redis not answering, test mode from another machine. Django's view then
answers as it always has — the 403, 400 or 415 with its JSON body, the table when Redis is away
— so every refusal and its logging and metrics stay in one place.
"""

from __future__ import annotations

import hmac
import io
import logging
from typing import Any
from urllib.parse import parse_qsl

from django.conf import settings

from agents.common import webhook_buffer
from agents.common.twilio_security import auth_tokens, request_validator
from agents.common.webhooks import BadWebhook, on_accepted
from agents.messaging import callbacks
from agents.messaging.sending import STATUS_PATH
from agents.messaging.webhooks import status_dedupe_key, status_event

log = logging.getLogger(__name__)
MAX_BODY = 16 * 1024  # a status callback is well under 1 KB
PROVIDER = "twilio"


class StatusCallbackIngress:
    """WSGI middleware: ``StatusCallbackIngress(django_application)``."""

    def __init__(self, app) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response):
        if environ.get("PATH_INFO") != STATUS_PATH or environ.get("REQUEST_METHOD") != "POST":
            return self.app(environ, start_response)
        body, answered = self._try(environ)
        if answered:
            start_response("204 No Content", [("Content-Length", "0")])
            return []
        if body is not None:  # read here: Django reads it again
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
        return self.app(environ, start_response)

    def _try(self, environ: dict[str, Any]) -> tuple[bytes | None, bool]:
        """(the body if it was read, True when the callback was buffered and is answered)."""
        if not settings.REDIS_URL or environ.get("HTTP_X_TWILIO_WEBHOOKS_SIGNATURE_SETTINGS"):
            return None, False
        signature = environ.get("HTTP_X_TWILIO_SIGNATURE", "")
        kind, _, charset = (environ.get("CONTENT_TYPE") or "").partition(";")
        if not signature or kind.strip().lower() != "application/x-www-form-urlencoded":
            return None, False
        if charset and charset.strip().lower().replace("_", "-") not in ("charset=utf-8", "charset=utf8"):
            return None, False
        if settings.COMMS_MODE == "test" and not _loopback(environ.get("REMOTE_ADDR") or ""):
            return None, False
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return None, False
        if not 0 < length <= MAX_BODY:
            return None, False
        body = environ["wsgi.input"].read(length)
        try:
            text = body.decode("utf-8")
            pairs = parse_qsl(text, keep_blank_values=True, errors="strict")
            query = environ.get("QUERY_STRING", "")
            query.encode("ascii")
        except ValueError:  # not UTF-8, a bad escape, a query that is not ASCII
            return body, False
        form = dict(pairs)
        if len(form) != len(pairs) or any("\x00" in k or "\x00" in v for k, v in pairs) or "%00" in query:
            return body, False
        url = settings.PUBLIC_BASE_URL + STATUS_PATH + (f"?{query}" if query else "")
        expected = signature.encode()
        if not any(
            hmac.compare_digest(request_validator(token).compute_signature(url, form).encode(), expected)
            for token in auth_tokens()
        ):
            return body, False  # Django's validator decides (other URL forms), and refuses
        try:
            event = status_event(form, dict(parse_qsl(query, keep_blank_values=True)))
        except BadWebhook:
            return body, False
        key = status_dedupe_key(event)[:255]
        if not webhook_buffer.push(
            provider=PROVIDER, kind=callbacks.STATUS_KIND, dedupe_key=key, payload=event
        ):
            return body, False  # Redis away: Django's view stores it in the table
        callbacks.status_drain_schedule()
        on_accepted(PROVIDER, callbacks.STATUS_KIND)
        log.debug("status callback %s buffered (fast lane)", key)
        return body, True


def _loopback(address: str) -> bool:
    from comms_platform.testmode import is_loopback

    return not address or is_loopback(address)
