"""The test-mode provider: behaves like Twilio, offline.

It answers with realistic ``SM…`` SIDs and, from a background thread, delivers status
callbacks (queued → sent → delivered) to OUR status webhook under PUBLIC_BASE_URL,
signed with the configured TWILIO_AUTH_TOKEN exactly as Twilio signs them.

Destination numbers choose failures, as Twilio's magic numbers do:
- ending in 1211 / 1614 / 1610 / 1408: refused at once with that error (HTTP 400, as 2xxxx);
- ending in 0003 / 0004 / 0005 / 0006 / 0007 / 0008: accepted, then ``undelivered`` with 300xx.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from datetime import datetime

import requests
from django.conf import settings
from django.utils import timezone
from twilio.request_validator import RequestValidator

from agents.common.errors import PermanentError
from agents.messaging.providers.base import MessagingProvider, OutboundMessage, SendResult
from agents.messaging.statuses import error_reason

log = logging.getLogger(__name__)

REFUSED = {"1211": "21211", "1614": "21614", "1610": "21610", "1408": "21408"}
UNDELIVERED = {"0003", "0004", "0005", "0006", "0007", "0008"}

# Messages "at Twilio" in this process, for find_recent (sid, to, body, created).
_sent: list[tuple[str, str, str, datetime]] = []
_sent_lock = threading.Lock()


def new_sid(prefix: str = "SM") -> str:
    return prefix + secrets.token_hex(16)


def callback_events(to: str) -> list[dict[str, str]]:
    number = to.removeprefix("whatsapp:")
    events = [{"MessageStatus": "queued"}, {"MessageStatus": "sent"}]
    if number[-4:] in UNDELIVERED:
        code = "3" + number[-4:]
        events.append({"MessageStatus": "undelivered", "ErrorCode": code, "ErrorMessage": error_reason(code)})
    else:
        events.append({"MessageStatus": "delivered"})
        if to.startswith("whatsapp:"):
            events.append({"MessageStatus": "read"})
    return events


def post_signed(url: str, params: dict[str, str], token: str) -> requests.Response:
    """POST form params to ``url`` signed as Twilio signs (the fragment is not sent)."""
    url = url.split("#", 1)[0]
    signature = RequestValidator(token).compute_signature(url, params)
    return requests.post(url, data=params, headers={"X-Twilio-Signature": signature}, timeout=10)


class SimulatedProvider(MessagingProvider):
    name = "simulated"

    def send(self, message: OutboundMessage) -> SendResult:
        number = message.to.removeprefix("whatsapp:")
        if number[-4:] in REFUSED:
            code = REFUSED[number[-4:]]
            raise PermanentError(error_reason(code), code=code)
        sid = new_sid()
        with _sent_lock:
            _sent.append((sid, message.to, message.body, timezone.now()))
        if settings.MESSAGING_SIMULATED_CALLBACKS:
            base = {
                "MessageSid": sid, "SmsSid": sid, "AccountSid": settings.TWILIO_ACCOUNT_SID,
                "From": message.from_, "To": message.to, "ApiVersion": "2010-04-01",
            }  # fmt: skip
            if message.messaging_service_sid:
                base["MessagingServiceSid"] = message.messaging_service_sid
            thread = threading.Thread(
                target=self._deliver,
                args=(message.status_callback, base, callback_events(message.to)),
                daemon=True,
            )
            thread.start()
        return SendResult(sid=sid, status="queued")

    def find_recent(self, *, to: str, since: datetime, body: str) -> str | None:
        with _sent_lock:
            for sid, sent_to, sent_body, created in reversed(_sent):
                if sent_to == to and sent_body == body and created >= since:
                    return sid
        return None

    @staticmethod
    def _deliver(url: str, base: dict[str, str], events: list[dict[str, str]]) -> None:
        for event in events:
            time.sleep(settings.MESSAGING_SIMULATED_CALLBACK_DELAY)
            params = {**base, **event, "SmsStatus": event["MessageStatus"]}
            try:
                response = post_signed(url, params, settings.TWILIO_AUTH_TOKEN)
                if response.status_code >= 400:
                    log.warning(
                        "simulated callback %s answered %s", event["MessageStatus"], response.status_code
                    )
            except requests.RequestException as exc:
                log.warning("simulated callback %s not delivered: %s", event["MessageStatus"], exc)
