"""SendGrid's signed event webhook: ``POST /webhooks/sendgrid/events/``.

https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/getting-started-event-webhook-security-features
— ECDSA P-256 / SHA-256 over ``timestamp + raw body``, base64 in
``X-Twilio-Email-Event-Webhook-Signature``. SendGrid retries for 24 h and documents no
replay window, so each event is applied once by ``sg_event_id`` (the base view's unique
WebhookEvent) and a batch whose signed timestamp is older than
SENDGRID_EVENT_MAX_AGE_SECONDS is refused as a second fence.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from django.conf import settings
from django.http import HttpRequest

from agents.common.models import WebhookEvent
from agents.common.webhooks import JSON_TYPES, BadWebhook, WebhookView
from agents.email import event_keys, services
from comms_platform import jsonsafe

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
# SendGrid's clock and ours may differ a little; a timestamp further ahead is forged.
FUTURE_SKEW_SECONDS = 300


class SendGridEventsView(WebhookView):
    provider = "sendgrid"
    kind = "events"
    content_types = JSON_TYPES
    signature_over_raw_body = True

    def verify(self, request: HttpRequest) -> bool:
        key = event_keys.verification_key()
        signature = request.headers.get(SIGNATURE_HEADER, "")
        timestamp = request.headers.get(TIMESTAMP_HEADER, "")
        if key is None or not signature or not timestamp.isdigit():
            return False
        age = time.time() - int(timestamp)
        if age > settings.SENDGRID_EVENT_MAX_AGE_SECONDS or age < -FUTURE_SKEW_SECONDS:
            return False
        try:
            key.verify(base64.b64decode(signature, validate=True), timestamp.encode() + request.body,
                       ec.ECDSA(hashes.SHA256()))  # fmt: skip
        except (InvalidSignature, binascii.Error, ValueError):
            return False
        return True

    def parse(self, request: HttpRequest) -> list[dict[str, Any]]:
        try:
            # NaN/Infinity are kept here and the event holding one is stored as rejected
            # (reject_reason), so one bad event does not make SendGrid retry the whole batch.
            events = jsonsafe.loads(request.body, allow_non_finite=True)
        except (ValueError, RecursionError) as exc:
            raise BadWebhook(f"the body is not JSON: {exc}") from None
        if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
            raise BadWebhook("the body must be a JSON array of event objects")
        return events

    def reject_reason(self, event: dict[str, Any]) -> str:
        where = jsonsafe.non_finite_path(event)
        return f"non-finite number at {where}" if where else ""

    def dedupe_key(self, event: dict[str, Any]) -> str:
        event_id = event.get("sg_event_id")
        if event_id:
            return str(event_id)
        # Without an id (never seen from SendGrid), the event's content identifies it.
        return "digest:" + hashlib.sha256(json.dumps(event, sort_keys=True).encode()).hexdigest()

    def process(self, event: dict[str, Any], record: WebhookEvent) -> str:
        return services.email_apply_event(event=event, event_id=record.dedupe_key)
