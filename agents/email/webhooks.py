"""SendGrid's signed event webhook: ``POST /webhooks/sendgrid/events/``, on django-anymail.

https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/getting-started-event-webhook-security-features
— ECDSA P-256 / SHA-256 over ``timestamp + raw body``, base64 in
``X-Twilio-Email-Event-Webhook-Signature``.

Our base view (``agents.common.webhooks.WebhookView``) is the endpoint: 403 on a bad or
missing signature, never open without a key, each event stored once under its
``sg_event_id``, a bad event in a batch stored as rejected. django-anymail's
``SendGridTrackingWebhookView`` does the SendGrid parts: its validators check the ECDSA
signature, and ``esp_to_anymail_event`` normalises each event into an
``AnymailTrackingEvent`` that ``agents.email.tracking`` applies. We add what anymail does
not do: SendGrid retries for 24 h and documents no replay window, so a batch whose signed
timestamp is older than SENDGRID_EVENT_MAX_AGE_SECONDS (or ahead of our clock) is refused.

anymail's own view is not mounted because it answers a bad signature with 400, accepts
everything when no key is configured (it only warns) and neither stores nor de-duplicates.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
import warnings
from typing import Any

from anymail.exceptions import AnymailInsecureWebhookWarning, AnymailWebhookValidationFailure
from anymail.signals import AnymailTrackingEvent
from anymail.webhooks.sendgrid import SendGridTrackingWebhookView
from django.conf import settings
from django.http import HttpRequest

from agents.common.models import WebhookEvent
from agents.common.webhooks import JSON_TYPES, BadWebhook, WebhookView
from agents.email import event_keys, tracking
from comms_platform import jsonsafe

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
        timestamp = request.headers.get(TIMESTAMP_HEADER, "")
        if key is None or not timestamp.isdigit():
            return False  # never open: no key configured refuses everything
        age = time.time() - int(timestamp)
        if age > settings.SENDGRID_EVENT_MAX_AGE_SECONDS or age < -FUTURE_SKEW_SECONDS:
            return False
        try:
            anymail_view(key=event_keys.public_key_b64_of(key)).run_validators(request)
        except AnymailWebhookValidationFailure:
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
        return tracking.email_apply_tracking(event=normalise(event), event_id=record.dedupe_key)


@functools.lru_cache(maxsize=4)
def anymail_view(*, key: str = "") -> SendGridTrackingWebhookView:
    """anymail's SendGrid tracking view, used for its validators and its normaliser (it loads
    ``key`` — base64 DER, as SendGrid shows it — as the ECDSA verification key). Neither
    keeps per-request state, so one instance per key serves every request."""
    with warnings.catch_warnings():
        # The instance without a key only normalises; it is never mounted as an endpoint,
        # so anymail's "webhook without basic auth" warning does not apply to it.
        warnings.simplefilter("ignore", AnymailInsecureWebhookWarning)
        return SendGridTrackingWebhookView(tracking_webhook_verification_key=key or None)


def normalise(raw: dict[str, Any]) -> AnymailTrackingEvent:
    """anymail's normalised event for one raw SendGrid event; ``esp_event`` is the raw event."""
    clean = normalisable(raw)
    try:
        event = anymail_view().esp_to_anymail_event(clean)
    except (OverflowError, OSError):  # a timestamp out of the platform's range
        clean.pop("timestamp", None)
        event = anymail_view().esp_to_anymail_event(clean)
    event.esp_event = raw
    return event


def normalisable(raw: dict[str, Any]) -> dict[str, Any]:
    """A copy anymail's SendGrid normaliser cannot trip on (it expects an ``event`` string, a
    numeric ``timestamp`` and string reasons); the stored raw event stays as it came."""
    clean = dict(raw)
    clean["event"] = str(raw.get("event", ""))
    if not isinstance(raw.get("timestamp"), int | float) or isinstance(raw.get("timestamp"), bool):
        clean.pop("timestamp", None)
    for key in ("type", "reason"):
        if key in clean and not isinstance(clean[key], str):
            clean[key] = str(clean[key])
    return clean
