"""Twilio Calls API through the official SDK.

``TWILIO_API_BASE_URL`` points the SDK at another address (a local fake in tests): the
SDK still builds the real request, only ``https://<sub>.twilio.com`` is swapped.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import requests
from django.conf import settings
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from agents.voice.providers.base import OutboundCall, VoiceProvider
from orchestrator.errors import PermanentError, TransientError

TWILIO_HOST = re.compile(r"^https://[A-Za-z0-9.-]+\.twilio\.com")
STATUS_EVENTS = ["initiated", "ringing", "answered", "completed"]
TIMEOUT_SECONDS = 10.0


class BaseUrlHttpClient(TwilioHttpClient):
    """Sends every Twilio API request to ``base_url`` instead of ``*.twilio.com``."""

    def __init__(self, base_url: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.base_url = base_url.rstrip("/")

    def request(self, method: str, url: str, *args, **kwargs):
        return super().request(method, TWILIO_HOST.sub(self.base_url, url), *args, **kwargs)


def twilio_client() -> Client:
    base = settings.TWILIO_API_BASE_URL
    http = (
        BaseUrlHttpClient(base, timeout=TIMEOUT_SECONDS)
        if base
        else TwilioHttpClient(timeout=TIMEOUT_SECONDS)
    )
    return Client(settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN, http_client=http)


class TwilioVoiceProvider(VoiceProvider):
    name = "twilio"

    def start_call(self, call: OutboundCall) -> str:
        options: dict = {
            "to": call.to,
            "from_": call.from_,
            "url": call.twiml_url,
            "method": "POST",
            "status_callback": call.status_callback,
            "status_callback_event": STATUS_EVENTS,
            "status_callback_method": "POST",
        }
        if call.record:
            options.update(record=True, recording_status_callback=call.recording_callback,
                           recording_status_callback_method="POST")  # fmt: skip
        if call.machine_detection:
            options["machine_detection"] = call.machine_detection
        if call.time_limit:
            # Twilio hangs up by itself too, should our websocket timer be lost.
            options["time_limit"] = call.time_limit + 30
        with twilio_errors():
            return twilio_client().calls.create(**options).sid

    def hang_up(self, call_sid: str) -> None:
        """``POST /Calls/<sid>.json`` with ``Status=completed``: Twilio ends the call at once,
        closes the ConversationRelay socket and sends the ``completed`` status callback
        (twilio.com/docs/voice/api/call-resource#update-a-call-resource)."""
        with twilio_errors():
            twilio_client().calls(call_sid).update(status="completed")

    def dequeue(self, *, queue_sid: str, call_sid: str, url: str) -> None:
        """Dequeue the member and have its call execute the TwiML at ``url``
        (twilio.com/docs/voice/api/queue-member#update-a-member-resource)."""
        with twilio_errors():
            twilio_client().queues(queue_sid).members(call_sid).update(url=url, method="POST")

    def fetch_call(self, sid: str) -> tuple[str, int | None]:
        # GET /Calls/{sid}.json (twilio-python CallContext.fetch): a lost final callback.
        try:
            with twilio_errors(not_found_ok=True):
                call = twilio_client().calls(sid).fetch()
        except _NotFound:
            return "not_found", None
        duration = str(call.duration or "")
        return call.status or "", int(duration) if duration.isdigit() else None


class _NotFound(Exception):
    pass


@contextlib.contextmanager
def twilio_errors(*, not_found_ok: bool = False) -> Iterator[None]:
    """Twilio's answers as our typed errors: 429 and 5xx transient, other refusals permanent,
    no answer transient (``provider_unreachable``)."""
    try:
        yield
    except TwilioRestException as exc:
        if not_found_ok and exc.status == 404:
            raise _NotFound from None
        raise _error(exc) from exc
    except requests.RequestException as exc:
        raise TransientError(
            f"Twilio unreachable: {type(exc).__name__}", code="provider_unreachable"
        ) from exc


def _error(exc: TwilioRestException):
    code = f"twilio_{exc.code}" if exc.code else f"twilio_http_{exc.status}"
    message = f"Twilio refused the request (HTTP {exc.status}, code {exc.code}): {exc.msg}"
    if exc.status == 429 or exc.status >= 500:
        return TransientError(message, code=code)
    return PermanentError(message, code=code)
