"""A seeded fuzz of every webhook and of the API's JSON: 0 responses ≥ 500.

Every Twilio endpoint (messaging status and inbound, voice TwiML, gather, connect action, call
status, recording) gets arbitrary bytes under arbitrary content types, unsigned and signed with
the test token; SendGrid's gets JSON with NaN, Infinity, 1e400 and deep nesting, signed; the
API's JSON endpoints get the same. Seeded (``derandomize``): the same examples on every run.
The specific answers the issue asks for are checked one by one below the fuzz.
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

from agents.common.models import WebhookEvent
from agents.email import event_keys
from tests.messaging.conftest import FORM, INBOUND_URL, PUBLIC, STATUS_URL, TOKEN

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("messaging_settings")]
FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip
raw = Client(raise_request_exception=False)
TASK = "00000000-0000-0000-0000-000000000001"
TWILIO_URLS = [STATUS_URL, INBOUND_URL] + [
    f"{PUBLIC}/webhooks/twilio/voice/{TASK}/{kind}/"
    for kind in ("twiml", "status", "recording", "connect-action", "gather")
]
CONTENT_TYPES = [FORM, "application/json", "text/plain", "", "multipart/form-data; boundary=x",
                 f"{FORM}; charset=latin-1", "application/xml"]  # fmt: skip
NASTY_JSON = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "[" * 100_000 + "]" * 100_000,
              '{"a":' * 20_000 + "1" + "}" * 20_000, "1" * 5000, '"\\u0000"', "[1e309]"]  # fmt: skip


@pytest.fixture
def messaging_settings(settings):
    from tests.messaging.conftest import messaging_settings as configure

    return configure.__wrapped__(settings)


def test_every_twilio_url_is_routed():
    for url in TWILIO_URLS:
        response = raw.post(url.removeprefix(PUBLIC), "a=b", content_type=FORM)
        assert response.status_code == 403, (url, response.status_code)


@FUZZ
@given(url=st.sampled_from(TWILIO_URLS), body=st.binary(max_size=300) | st.sampled_from(
    [b"NumMedia=abc&MessageSid=SM1&From=%2B14155550100", b"NumSegments=1e9&MessageSid=SM1&From=x",
     b"NumMedia=999999999&MessageSid=SM1&From=%2B14155550100", b"\xff\xfe", b"a=%FF%FE", b"{}"]),
    content_type=st.sampled_from(CONTENT_TYPES), signed=st.booleans())  # fmt: skip
def test_twilio_webhooks_never_answer_5xx(url, body, content_type, signed):
    headers = {"HTTP_X_TWILIO_SIGNATURE": "bm90LWEtc2lnbmF0dXJl"}
    if signed:
        try:
            from urllib.parse import parse_qsl

            params = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        except (UnicodeDecodeError, ValueError):
            params = {}
        headers["HTTP_X_TWILIO_SIGNATURE"] = RequestValidator(TOKEN).compute_signature(url, params)
    response = raw.generic("POST", url.removeprefix(PUBLIC), body, content_type=content_type, **headers)
    assert response.status_code < 500, (url, content_type, response.status_code, response.content[:200])
    if content_type.split(";")[0] not in (FORM, "multipart/form-data"):
        assert response.status_code == 415


@pytest.mark.parametrize("field", ["NumMedia", "NumSegments"])
@pytest.mark.parametrize("value", ["abc", "1e9", "-1", "99999999999"])
def test_signed_inbound_with_bad_counts_is_400(client, field, value):
    params = {"MessageSid": "SM" + "1" * 32, "From": "+14155550100", "To": "+15005550006", "Body": "hi",
              field: value}  # fmt: skip
    signature = RequestValidator(TOKEN).compute_signature(INBOUND_URL, params)
    response = client.post(INBOUND_URL.removeprefix(PUBLIC), urlencode(params), content_type=FORM,
                           HTTP_X_TWILIO_SIGNATURE=signature)  # fmt: skip
    assert response.status_code == 400, response.content
    assert field in response.json()["error"]["message"]
    assert not WebhookEvent.objects.exists()


# --- SendGrid ---------------------------------------------------------------------------


@pytest.fixture
def key(settings):
    private = ec.generate_private_key(ec.SECP256R1())
    settings.SENDGRID_EVENT_PUBLIC_KEY = event_keys.public_key_b64(private)
    return private


def sendgrid(key, body: bytes, content_type: str = "application/json"):
    timestamp = str(int(time.time()))
    return raw.post("/webhooks/sendgrid/events/", data=body, content_type=content_type,
                    HTTP_X_TWILIO_EMAIL_EVENT_WEBHOOK_TIMESTAMP=timestamp,
                    HTTP_X_TWILIO_EMAIL_EVENT_WEBHOOK_SIGNATURE=event_keys.sign(key, timestamp, body))  # fmt: skip


@FUZZ
@given(
    nasty=st.sampled_from(NASTY_JSON), wrap=st.sampled_from(["{}", '[{"event": "open", "x": {}}]', "[{}]"])
)
def test_sendgrid_never_answers_5xx(key, nasty, wrap):
    body = wrap.replace("{}", nasty, 1)
    response = sendgrid(key, body.encode())
    assert response.status_code < 500, (body[:80], response.status_code, response.content[:200])


def test_sendgrid_batch_with_one_nan_event_stores_it_rejected_and_applies_the_rest(key):
    body = (
        '[{"event": "open", "sg_event_id": "ok-1", "email": "a@example.com", "timestamp": 1700000000},'
        ' {"event": "open", "sg_event_id": "bad-1", "email": "b@example.com", "timestamp": NaN},'
        ' {"event": "open", "sg_event_id": "ok-2", "email": "c@example.com", "timestamp": 1e400}]'
    )
    response = sendgrid(key, body.encode())
    assert response.status_code == 200, response.content
    rows = {row.dedupe_key: row for row in WebhookEvent.objects.filter(provider="sendgrid")}
    assert set(rows) == {"ok-1", "bad-1", "ok-2"}
    assert rows["bad-1"].outcome.startswith("rejected: non-finite number at $.timestamp")
    assert rows["bad-1"].payload["timestamp"] == "NaN"
    assert rows["ok-2"].outcome.startswith("rejected:")  # 1e400 is infinite as well
    assert not rows["ok-1"].outcome.startswith("rejected")
    # SendGrid retries the same batch: nothing changes, still a 2xx.
    assert sendgrid(key, body.encode()).status_code == 200
    assert WebhookEvent.objects.filter(provider="sendgrid").count() == 3


def test_sendgrid_deep_nesting_is_400(key):
    response = sendgrid(key, ("[" * 100_000 + "]" * 100_000).encode())
    assert response.status_code == 400


def test_sendgrid_unsigned_is_403_whatever_the_body(settings, key):
    response = raw.post("/webhooks/sendgrid/events/", data=b"\xff", content_type="text/plain")
    assert response.status_code == 403


def test_sendgrid_signed_wrong_content_type_is_415(key):
    assert sendgrid(key, b"[]", content_type="text/plain").status_code == 415


# --- The API ----------------------------------------------------------------------------

API_JSON = ["/api/tasks/", "/api/contacts/"]


@pytest.mark.parametrize("url", API_JSON)
@pytest.mark.parametrize("nasty", NASTY_JSON)
def test_api_refuses_non_finite_numbers_and_deep_nesting_with_400(api, url, nasty):
    for body in (nasty, '{"type": "diagnostic.echo", "payload": {"n": ' + nasty + "}}"):
        response = api.post(url, body, content_type="application/json")
        assert response.status_code == 400, (url, body[:60], response.status_code, response.content[:200])


@FUZZ
@given(
    payload=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=20,
    ),
    field=st.sampled_from(["payload", "priority", "contact", "correlation_id", "scheduled_for", "type"]),
)
def test_api_task_intake_never_answers_5xx(api, payload, field):
    body = {"type": "diagnostic.echo", "payload": {}, field: payload}
    response = api.post("/api/tasks/", json.dumps(body), content_type="application/json")
    assert response.status_code < 500, (body, response.status_code, response.content[:200])
