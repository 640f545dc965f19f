"""Fuzzed bodies on every webhook endpoint: a 4xx (or a harmless 2xx), never a 5xx.

Twilio's endpoints get form bodies built from their real field names plus arbitrary ones,
with arbitrary values (NUL characters, huge strings, odd Unicode), both unsigned and signed
with the test token (so they get past the signature into parsing and processing); the
query string (?task=…) is fuzzed too. SendGrid's gets arbitrary bytes and arbitrary JSON,
signed with a key made here. Also the e-mail unsubscribe link with fuzzed tokens.
"""

from __future__ import annotations

import json
import time
from urllib.parse import urlencode

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

from agents.email import event_keys
from tests.messaging.conftest import INBOUND_URL, PUBLIC, STATUS_URL, TOKEN

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("messaging_settings")]
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
TWILIO_FIELDS = ["MessageSid", "SmsSid", "MessageStatus", "SmsStatus", "AccountSid", "From", "To", "Body",
                 "NumMedia", "NumSegments", "MediaUrl0", "MediaContentType0", "ErrorCode", "ProfileName",
                 "WaId", "OptOutType", "ApiVersion", "ButtonPayload"]  # fmt: skip
text = st.text(max_size=300) | st.sampled_from(["", "\x00", "+14155550100", "delivered", "undelivered", "STOP",
                                                "SM" + "a" * 32, "AC" + "0" * 31 + "1", "9" * 40, "-1", "NaN"])  # fmt: skip
forms = st.dictionaries(st.sampled_from(TWILIO_FIELDS) | st.text(min_size=1, max_size=20), text, max_size=12)
queries = st.sampled_from(["", "?task=", "?task=00000000-0000-0000-0000-000000000000", "?task=%00",
                           "?task=not-a-uuid"]) | st.builds(lambda t: "?" + urlencode({"task": t}), text)  # fmt: skip
raw = Client(raise_request_exception=False)


@pytest.fixture
def messaging_settings(settings):
    from tests.messaging.conftest import messaging_settings as configure

    return configure.__wrapped__(settings)


def _twilio(url: str, form: dict, query: str, signed: bool):
    full = url + query
    headers = {}
    if signed:
        headers["HTTP_X_TWILIO_SIGNATURE"] = RequestValidator(TOKEN).compute_signature(full, form)
    return raw.post(full.removeprefix(PUBLIC), form, **headers)


@FUZZ
@given(form=forms, query=queries, signed=st.booleans())
def test_twilio_status_webhook(form, query, signed):
    response = _twilio(STATUS_URL, form, query, signed)
    assert response.status_code < 500, (response.status_code, response.content[:300])
    if not signed:
        assert response.status_code == 403


@FUZZ
@given(form=forms, query=queries, signed=st.booleans())
def test_twilio_inbound_webhook(form, query, signed, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = _twilio(INBOUND_URL, form, query, signed)
    assert response.status_code < 500, (response.status_code, response.content[:300])
    if not signed:
        assert response.status_code == 403


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=15), inner, max_size=6),
    max_leaves=30,
)
event = st.fixed_dictionaries(
    {}, optional={"event": st.sampled_from(["delivered", "bounce", "dropped", "open", "unsubscribe"]) | text,
                  "sg_event_id": text, "sg_message_id": text, "email": text, "timestamp": json_values,
                  "task_id": text, "email_id": text, "type": text, "reason": text},
)  # fmt: skip
bodies = st.binary(max_size=400) | st.builds(lambda v: json.dumps(v).encode(), json_values | st.lists(event))


@pytest.fixture
def key(settings):
    private = ec.generate_private_key(ec.SECP256R1())
    settings.SENDGRID_EVENT_PUBLIC_KEY = event_keys.public_key_b64(private)
    return private


@FUZZ
@given(
    body=bodies, signed=st.booleans(), ts=st.sampled_from(["now", "", "abc", "-1", "99999999999999999999"])
)
def test_sendgrid_event_webhook(key, body, signed, ts):
    timestamp = str(int(time.time())) if ts == "now" else ts
    headers = {"HTTP_X_TWILIO_EMAIL_EVENT_WEBHOOK_TIMESTAMP": timestamp}
    if signed:
        headers["HTTP_X_TWILIO_EMAIL_EVENT_WEBHOOK_SIGNATURE"] = event_keys.sign(key, timestamp, body)
    response = raw.post("/webhooks/sendgrid/events/", data=body, content_type="application/json", **headers)
    assert response.status_code < 500, (response.status_code, response.content[:300])
    if not signed:
        assert response.status_code == 403


@FUZZ
@given(token=st.text(min_size=1, max_size=200).filter(lambda t: "/" not in t))
def test_unsubscribe_link(token):
    from urllib.parse import quote

    response = raw.get(f"/email/unsubscribe/{quote(token, safe='')}/")
    assert response.status_code < 500
