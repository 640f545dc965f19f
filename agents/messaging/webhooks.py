"""Twilio messaging webhooks: status callbacks and inbound messages.

Both verify ``X-Twilio-Signature`` with Twilio's own validator against the public URL
(PUBLIC_BASE_URL + path + query), accept every configured auth token (rotation), refuse
and count what fails, and store each event once (agents.common.webhooks.WebhookView).
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from twilio.twiml.messaging_response import MessagingResponse

from agents.common.models import WebhookEvent
from agents.common.twilio_security import form_dict, is_valid_twilio_request
from agents.common.webhooks import BadWebhook, WebhookView
from agents.messaging import callbacks, inbound
from agents.messaging.statuses import IGNORED, TASK_STATUS
from dossiers.services import InvalidPhoneNumber

MAX_MEDIA = 10  # Twilio's limit per message
MAX_SEGMENTS = 1600


def _check_count(event: dict[str, Any], name: str, low: int, high: int) -> None:
    value = event.get(name) or ""
    if value and not (value.isascii() and value.isdigit() and low <= int(value) <= high):
        raise BadWebhook(f"{name} must be a whole number from {low} to {high}, not {value[:20]!r}")


def status_event(form: dict[str, str], query: Any) -> dict[str, Any]:
    """A status callback's event: its form fields plus our ids from the callback URL's query
    (``query``: anything with ``get``). BadWebhook when it is not one (a 400)."""
    event = form
    if not (event.get("MessageSid") or event.get("SmsSid")) or not (
        event.get("MessageStatus") or event.get("SmsStatus")
    ):
        raise BadWebhook("MessageSid and MessageStatus are required")
    status = event.get("MessageStatus") or event.get("SmsStatus")
    if status not in TASK_STATUS and status not in IGNORED:
        raise BadWebhook(f"unknown MessageStatus {status!r}")
    # The task id of our callback URL travels with the stored event.
    event[callbacks.TASK_KEY] = query.get("task", "")
    # A broadcast's message (no task): its message id and the broadcast's reference.
    for key, name in ((callbacks.MESSAGE_KEY, "message"), (callbacks.REF_KEY, "ref")):
        if query.get(name):
            event[key] = query.get(name)[:64]
    return event


def status_dedupe_key(event: dict[str, Any]) -> str:
    sid = event.get("MessageSid") or event.get("SmsSid")
    status = event.get("MessageStatus") or event.get("SmsStatus")
    return f"status:{sid}:{status}"


class StatusCallbackView(WebhookView):
    """Buffers each callback (one XADD; one INSERT when Redis is away) and answers; a worker
    stores and applies them a moment later, in batches (``callbacks.status_events_drain``), in
    arrival order, so Twilio is never kept waiting."""

    provider = "twilio"
    kind = callbacks.STATUS_KIND
    process_later = True
    buffered = True

    def verify(self, request: HttpRequest) -> bool:
        return is_valid_twilio_request(request)

    def parse(self, request: HttpRequest) -> list[dict[str, Any]]:
        return [status_event(form_dict(request), request.GET)]

    def dedupe_key(self, event: dict[str, Any]) -> str:
        return status_dedupe_key(event)

    def process(self, event: dict[str, Any], record: WebhookEvent) -> str:
        return callbacks.status_apply(event=event, task_id=event.get(callbacks.TASK_KEY))

    def schedule(self, record_id: int | None) -> None:
        callbacks.status_drain_schedule()

    def respond(self, request: HttpRequest, outcomes: list[str]) -> HttpResponse:
        return HttpResponse(status=204)


class InboundView(WebhookView):
    provider = "twilio"
    kind = "messaging_inbound"

    def verify(self, request: HttpRequest) -> bool:
        return is_valid_twilio_request(request)

    def parse(self, request: HttpRequest) -> list[dict[str, Any]]:
        event = form_dict(request)
        if not event.get("MessageSid") or not event.get("From"):
            raise BadWebhook("MessageSid and From are required")
        _check_count(event, "NumMedia", 0, MAX_MEDIA)
        _check_count(event, "NumSegments", 0, MAX_SEGMENTS)
        self.reply = ""
        return [event]

    def dedupe_key(self, event: dict[str, Any]) -> str:
        return f"inbound:{event['MessageSid']}"

    def process(self, event: dict[str, Any], record: WebhookEvent) -> str:
        try:
            self.reply = inbound.inbound_receive(event=event)
        except InvalidPhoneNumber:
            # A WhatsApp id without a phone number, or a short code: kept, not queued.
            return "unroutable_sender"
        return "help" if self.reply else "received"

    def respond(self, request: HttpRequest, outcomes: list[str]) -> HttpResponse:
        twiml = MessagingResponse()
        if self.reply:
            twiml.message(self.reply)
        return HttpResponse(str(twiml), content_type="text/xml")
