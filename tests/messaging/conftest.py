from __future__ import annotations

import os
from urllib.parse import urlencode

import pytest
from twilio.request_validator import RequestValidator

from comms_platform import ratelimit
from tests.fakes.twilio import FakeTwilio
from tests.support.services import unavailable

PUBLIC = "https://comms.example.com"
STATUS_URL = f"{PUBLIC}/webhooks/twilio/messaging/status/"
INBOUND_URL = f"{PUBLIC}/webhooks/twilio/messaging/inbound/"
TOKEN = "0123456789abcdef0123456789abcdef"
ACCOUNT = "AC" + "0" * 31 + "1"
FORM = "application/x-www-form-urlencoded"  # what Twilio sends


@pytest.fixture(autouse=True)
def messaging_settings(settings):
    settings.PUBLIC_BASE_URL = PUBLIC
    settings.TWILIO_ACCOUNT_SID = ACCOUNT
    settings.TWILIO_AUTH_TOKEN = TOKEN
    settings.TWILIO_PREVIOUS_AUTH_TOKENS = []
    settings.TWILIO_SMS_FROM = "+15005550006"
    settings.TWILIO_MESSAGING_SERVICE_SID = ""
    settings.TWILIO_WHATSAPP_FROM = "whatsapp:+14155238886"
    settings.TWILIO_API_BASE_URL = ""
    settings.MESSAGING_SIMULATED_CALLBACKS = False  # unit tests post callbacks themselves
    settings.MESSAGING_RATE_PER_SECOND = 0
    settings.REDIS_URL = ""
    ratelimit.reset_memory()
    return settings


@pytest.fixture
def fake_twilio(settings):
    fake = FakeTwilio(account_sid=ACCOUNT, auth_token=TOKEN).start()
    settings.TWILIO_API_BASE_URL = fake.base_url
    yield fake
    fake.stop()


def signed_post(client, url: str, params: dict, *, token: str = TOKEN, signature: str | None = None,
                multipart: bool = False, **headers):  # fmt: skip
    """POST form params to our webhook as Twilio would (application/x-www-form-urlencoded),
    signed with Twilio's own validator. ``multipart`` posts the test client's default encoding."""
    if signature is None:
        signature = RequestValidator(token).compute_signature(url, params)
    path = url.removeprefix(PUBLIC)
    if signature:
        headers["HTTP_X_TWILIO_SIGNATURE"] = signature
    if multipart:
        return client.post(path, params, **headers)
    return client.post(path, urlencode(params, doseq=True), content_type=FORM, **headers)


@pytest.fixture
def buffered(settings):
    """The status callbacks' Redis buffer (agents/common/webhook_buffer.py), empty, on the test
    Redis; the drain is scheduled as in production."""
    from agents.common import webhook_buffer
    from agents.messaging import callbacks

    settings.REDIS_URL = os.environ.get("REDIS_URL") or unavailable("needs Redis (set REDIS_URL=redis://…)")
    client = webhook_buffer.client()
    keys = (webhook_buffer.stream("twilio", callbacks.STATUS_KIND), callbacks.DRAIN_FLAG)
    client.delete(*keys)
    callbacks._flag_seen_at = -1.0
    yield client
    callbacks._flag_seen_at = -1.0
    client.delete(*keys)
