"""Twilio's Messages API through the official ``twilio`` SDK.

TWILIO_API_BASE_URL points the SDK at another host (a local fake in tests): the SDK still
builds the real request (path, form fields, basic auth); only scheme and host change.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

import requests
from django.conf import settings
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from agents.messaging.providers.base import MessagingProvider, OutboundMessage, SendResult
from agents.messaging.statuses import error_reason
from orchestrator.errors import PermanentError, TransientError

log = logging.getLogger(__name__)


class HeaderKeepingHttpClient(TwilioHttpClient):
    """Keeps the last answer's headers: TwilioRestException carries no Retry-After."""

    last_headers: dict = {}

    def request(self, method, url, *args, **kwargs):
        response = super().request(method, url, *args, **kwargs)
        self.last_headers = dict(response.headers or {})
        return response


class BaseUrlHttpClient(HeaderKeepingHttpClient):
    """Sends every ``https://*.twilio.com`` request to ``base_url`` instead."""

    def __init__(self, base_url: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.base = urlsplit(base_url)

    def request(self, method, url, *args, **kwargs):
        parts = urlsplit(url)
        if parts.hostname and parts.hostname.endswith("twilio.com"):
            prefix = self.base.path.rstrip("/")
            url = urlunsplit((self.base.scheme, self.base.netloc, prefix + parts.path, parts.query, ""))
        return super().request(method, url, *args, **kwargs)


def twilio_client() -> Client:
    if settings.TWILIO_API_BASE_URL:
        http_client = BaseUrlHttpClient(settings.TWILIO_API_BASE_URL, timeout=settings.TWILIO_TIMEOUT_SECONDS)
    else:
        http_client = HeaderKeepingHttpClient(timeout=settings.TWILIO_TIMEOUT_SECONDS)
    return Client(settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN, http_client=http_client)


def _retry_after(client: Client) -> float | None:
    """The Retry-After header (seconds) of Twilio's last answer, when it sent one."""
    headers = getattr(client.http_client, "last_headers", None) or {}
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: the orchestrator's own backoff applies


def _translate(exc: TwilioRestException, client: Client) -> Exception:
    code = str(exc.code or "")
    reason = error_reason(code, fallback=f"Twilio answered HTTP {exc.status}")
    if exc.status == 429 or exc.status >= 500:
        return TransientError(f"{reason} (HTTP {exc.status})", code=f"twilio_{code or exc.status}",
                              retry_after=_retry_after(client))  # fmt: skip
    return PermanentError(reason, code=code or f"http_{exc.status}")


class TwilioProvider(MessagingProvider):
    name = "twilio"

    def __init__(self) -> None:
        self._client: Client | None = None

    def client(self) -> Client:
        """One SDK client (one HTTP session, kept-alive connections) per provider instance: a
        broadcast batch sends all its messages through one instance."""
        if self._client is None:
            self._client = twilio_client()
        return self._client

    def send(self, message: OutboundMessage) -> SendResult:
        kwargs: dict = {"to": message.to, "status_callback": message.status_callback}
        if message.messaging_service_sid:
            kwargs["messaging_service_sid"] = message.messaging_service_sid
        else:
            kwargs["from_"] = message.from_
        if message.content_sid:
            kwargs["content_sid"] = message.content_sid
            kwargs["content_variables"] = json.dumps(message.content_variables)
        else:
            kwargs["body"] = message.body
        if message.media_urls:
            kwargs["media_url"] = message.media_urls
        try:
            client = self.client()
            created = client.messages.create(**kwargs)
        except TwilioRestException as exc:
            raise _translate(exc, client) from None
        except requests.RequestException as exc:
            error = TransientError(f"Twilio did not answer: {type(exc).__name__}", code="twilio_unreachable")
            # Unless the connection never opened, Twilio may have accepted the message without
            # our hearing back: the attempt stays open and the retry asks Twilio first (one
            # Messages list; harmless when nothing was sent). See services._reconcile.
            error.maybe_sent = not isinstance(exc, requests.ConnectTimeout)
            raise error from None
        return SendResult(sid=created.sid, status=created.status or "queued")

    def find_recent(self, *, to: str, since: datetime, body: str) -> str | None:
        # Twilio filters on DateSent by day at best: look a little earlier and compare.
        try:
            found = twilio_client().messages.list(
                to=to, date_sent_after=since - timedelta(minutes=5), limit=50
            )
        except (TwilioRestException, requests.RequestException) as exc:
            raise TransientError(
                f"cannot check Twilio for an earlier send: {exc}", code="twilio_unreachable"
            ) from None
        for item in found:
            if item.body == body and (
                item.date_created is None or item.date_created >= since - timedelta(seconds=5)
            ):
                return item.sid
        return None

    def fetch_status(self, sid: str) -> tuple[str, str]:
        # GET /Messages/{sid}.json (twilio-python MessageContext.fetch).
        try:
            message = twilio_client().messages(sid).fetch()
        except TwilioRestException as exc:
            if exc.status == 404:
                return "not_found", ""
            raise TransientError(
                f"cannot fetch the message from Twilio: {exc.msg}", code="twilio_unreachable"
            ) from None
        except requests.RequestException as exc:
            raise TransientError(
                f"Twilio did not answer: {type(exc).__name__}", code="twilio_unreachable"
            ) from None
        return message.status or "", str(message.error_code or "")
