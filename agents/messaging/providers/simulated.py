"""The test-mode provider: behaves like Twilio, offline.

It answers with realistic ``SM…`` SIDs and, from background threads, delivers status
callbacks (queued → sent → delivered) to OUR status webhook under PUBLIC_BASE_URL,
signed with the configured TWILIO_AUTH_TOKEN exactly as Twilio signs them.

Destination numbers choose failures, as Twilio's magic numbers do:
- ending in 1211 / 1614 / 1610 / 1408: refused at once with that error (HTTP 400, as 2xxxx);
- ending in 0003 / 0004 / 0005 / 0006 / 0007 / 0008: accepted, then ``undelivered`` with 300xx.
"""

from __future__ import annotations

import heapq
import http.client
import itertools
import logging
import os
import secrets
import threading
import time
import zlib
from datetime import datetime
from urllib.parse import urlencode, urlsplit

from django.conf import settings
from django.utils import timezone

from agents.common.twilio_security import request_validator
from agents.messaging.providers.base import MessagingProvider, OutboundMessage, SendResult
from agents.messaging.statuses import error_reason
from orchestrator.errors import PermanentError

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


COURIER_THREAD = "simulated-twili"  # the OS thread name (15 characters at most on Linux)


def _name_os_thread(name: str) -> None:
    """Name this thread for the operating system (``/proc/<pid>/task/<tid>/comm``): what the
    simulated provider spends posting callbacks stands for Twilio, and bench/broadcast.py counts
    it apart from the worker by this name. Python 3.11 names only its own thread objects."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):  # not Linux: the name is only for the benchmark
        pass


class _Courier:
    """Posts scheduled callbacks when they are due, in order, over one kept-alive session.

    A few couriers per process replace a thread, three fresh TCP connections and three
    ``requests`` calls per message, which cost a worker more than the send itself. A message's callbacks all go
    through the same courier (chosen by its SID), so they arrive in order, as Twilio
    mostly sends them.
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, str, dict[str, str]]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def schedule(self, url: str, params: list[dict[str, str]], delay: float) -> None:
        now = time.monotonic()
        with self._cond:
            for n, event in enumerate(params, 1):
                heapq.heappush(self._heap, (now + n * delay, next(self._seq), url, event))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="simulated-twilio", daemon=True)
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        _name_os_thread(COURIER_THREAD)
        connections: dict[tuple[str, str], http.client.HTTPConnection] = {}
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    self._cond.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                _, _, url, params = heapq.heappop(self._heap)
            try:
                status = _post_kept_alive(connections, url, params)
                if status >= 400:
                    log.warning("simulated callback %s answered %s", params["MessageStatus"], status)
            except (OSError, http.client.HTTPException) as exc:
                log.warning("simulated callback %s not delivered: %s", params["MessageStatus"], exc)


def _post_kept_alive(connections: dict, url: str, params: dict[str, str]) -> int:
    """POST form params to ``url`` signed as Twilio signs (over the URL without its
    fragment, which is not sent), on a kept-alive ``http.client`` connection: a fraction of
    the CPU that ``requests`` spends per call. Reconnects once when the server closed it."""
    url = url.split("#", 1)[0]
    parts = urlsplit(url)
    body = urlencode(params)
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Twilio-Signature": request_validator(settings.TWILIO_AUTH_TOKEN).compute_signature(url, params),
    }
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    key = (parts.scheme, parts.netloc)
    for retry in (False, True):
        conn = connections.get(key)
        if conn is None:
            factory = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
            conn = connections[key] = factory(parts.netloc, timeout=10)
        try:
            conn.request("POST", target, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            return response.status
        except (OSError, http.client.HTTPException):
            conn.close()
            del connections[key]
            if retry:
                raise
    raise AssertionError("unreachable")


_couriers = [_Courier() for _ in range(4)]
# A forked worker starts with fresh couriers: the parent's threads do not exist in it.
os.register_at_fork(after_in_child=lambda: [courier._reset() for courier in _couriers])


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
            params = [
                {**base, **event, "SmsStatus": event["MessageStatus"]}
                for event in callback_events(message.to)
            ]
            courier = _couriers[zlib.crc32(sid.encode()) % len(_couriers)]
            courier.schedule(message.status_callback, params, settings.MESSAGING_SIMULATED_CALLBACK_DELAY)
        return SendResult(sid=sid, status="queued")

    def find_recent(self, *, to: str, since: datetime, body: str) -> str | None:
        with _sent_lock:
            for sid, sent_to, sent_body, created in reversed(_sent):
                if sent_to == to and sent_body == body and created >= since:
                    return sid
        return None

    def fetch_status(self, sid: str) -> tuple[str, str]:
        # The simulated Twilio delivers everything it accepted (refused numbers get no SID).
        return ("delivered", "") if sid.startswith("SM") else ("not_found", "")
