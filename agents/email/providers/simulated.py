"""Test-mode email provider: behaves like SendGrid, offline.

It accepts the mail, answers with a SendGrid-like message id, and shortly afterwards
posts signed event webhook batches (processed → delivered → open), one batch each, to
our own ``/webhooks/sendgrid/events/`` under PUBLIC_BASE_URL — so the webhook, its
signature check, de-duplication and the task's final state all run as in production.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
import urllib.request
from email.utils import parseaddr
from typing import Any

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.core.mail.backends.base import BaseEmailBackend
from django.db import transaction

from agents.email import event_keys
from agents.email.providers.base import EmailProvider, OutgoingEmail
from orchestrator.errors import AgentError

log = logging.getLogger(__name__)

EVENTS = ("processed", "delivered", "open")
FIRST_DELAY_SECONDS = 0.2
STEP_SECONDS = 0.1


def message_id() -> str:
    """Like SendGrid's X-Message-Id: 22 URL-safe base64 characters."""
    return secrets.token_urlsafe(16)[:22]


ID_HEADER = "X-Simulated-Message-Id"


class SimulatedProvider(EmailProvider):
    """The same hooks as SendGrid's; the message goes to Django's dummy backend and the
    events SendGrid would send are posted, signed, after commit."""

    name = "simulated"
    awaits_events = True

    def deliver_events(self, sent: list[tuple[OutgoingEmail, str]]) -> None:
        """One signed batch per event kind, covering every message sent (SendGrid batches its
        events too), posted after commit."""
        if not sent:
            return
        batches = [[event(name, message, mid) for message, mid in sent] for name in EVENTS]
        url = f"{settings.PUBLIC_BASE_URL}/webhooks/sendgrid/events/"
        transaction.on_commit(lambda: start_delivery(url, batches))

    def connection(self) -> BaseEmailBackend:
        return get_connection("django.core.mail.backends.dummy.EmailBackend")

    def headers(self, message: OutgoingEmail) -> dict[str, str]:
        return {ID_HEADER: message_id()}

    def message_id(self, email: EmailMultiAlternatives) -> str:
        return email.extra_headers[ID_HEADER]

    def error_for(self, exc: Exception) -> AgentError | None:
        return None


def event(name: str, message: OutgoingEmail, mid: str) -> dict[str, Any]:
    """One event as SendGrid writes it (custom args at the top level)."""
    data: dict[str, Any] = {
        "email": parseaddr(message.to)[1],
        "timestamp": int(time.time()),
        "event": name,
        "sg_event_id": secrets.token_urlsafe(16),
        "sg_message_id": f"{mid}.filterdrecv-5645d9c87f-simul-1-{secrets.token_hex(4).upper()}-0.0",
        "smtp-id": f"<{mid}@ismtpd0001p1mdw1.sendgrid.net>",
        "category": list(message.categories),
        "task_id": message.task_id,
        "email_id": str(message.email_id),
    }
    if message.ref:
        data["ref"] = message.ref
    if name == "delivered":
        data.update({"response": "250 2.0.0 OK", "ip": "127.0.0.1", "tls": 1})
    if name == "open":
        data.update({"useragent": "Mozilla/5.0 (simulated)", "ip": "127.0.0.1", "sg_machine_open": False})
    return data


def start_delivery(url: str, batches: list[list[dict[str, Any]]]) -> None:
    threading.Thread(target=deliver, args=(url, batches), daemon=True, name="sendgrid-simulator").start()


def deliver(url: str, batches: list[list[dict[str, Any]]], first_delay: float = FIRST_DELAY_SECONDS) -> None:
    time.sleep(first_delay)
    for batch in batches:
        post_signed(url, batch)
        time.sleep(STEP_SECONDS)


def post_signed(url: str, batch: list[dict[str, Any]]) -> int:
    """POST one batch signed like SendGrid; returns the HTTP status (0 when unreachable)."""
    body = json.dumps(batch).encode()
    timestamp = str(int(time.time()))
    request = urllib.request.Request(  # noqa: S310 (our own PUBLIC_BASE_URL)
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "SendGrid Event API (simulated)",
            "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
            "X-Twilio-Email-Event-Webhook-Signature": event_keys.sign(
                event_keys.test_private_key(), timestamp, body
            ),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (our own URL)
            return response.status
    except urllib.error.HTTPError as exc:
        log.warning("simulated SendGrid event refused by %s: HTTP %s", url, exc.code)
        return exc.code
    except OSError as exc:
        log.warning("simulated SendGrid event not delivered to %s: %s", url, type(exc).__name__)
        return 0
