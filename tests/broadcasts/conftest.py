from __future__ import annotations

from urllib.parse import urlencode

import pytest
from twilio.request_validator import RequestValidator

from comms_platform import ratelimit
from tests.fakes.twilio import FakeTwilio

PUBLIC = "https://comms.example.com"
TOKEN = "0123456789abcdef0123456789abcdef"
ACCOUNT = "AC" + "0" * 31 + "1"


@pytest.fixture(autouse=True)
def broadcast_settings(settings):
    settings.PUBLIC_BASE_URL = PUBLIC
    settings.TWILIO_ACCOUNT_SID = ACCOUNT
    settings.TWILIO_AUTH_TOKEN = TOKEN
    settings.TWILIO_PREVIOUS_AUTH_TOKENS = []
    settings.TWILIO_SMS_FROM = "+15005550006"
    settings.TWILIO_MESSAGING_SERVICE_SID = ""
    settings.TWILIO_API_BASE_URL = ""
    settings.MESSAGING_SIMULATED_CALLBACKS = False  # the tests post the callbacks themselves
    settings.REDIS_URL = ""
    settings.BROADCAST_BATCH_SIZE = 3  # several batches even for a handful of recipients
    settings.BROADCAST_PARALLEL_BATCHES = 1
    ratelimit.reset_memory()
    return settings


@pytest.fixture
def fake_twilio(settings):
    fake = FakeTwilio(account_sid=ACCOUNT, auth_token=TOKEN).start()
    settings.TWILIO_API_BASE_URL = fake.base_url
    yield fake
    fake.stop()


def status_callback(client, *, callback_url: str, sid: str, status: str, **extra: str):
    """POST a status callback to the URL the message was sent with, signed as Twilio signs it."""
    url = callback_url.split("#", 1)[0]
    params = {"MessageSid": sid, "MessageStatus": status, "AccountSid": ACCOUNT, **extra}
    signature = RequestValidator(TOKEN).compute_signature(url, params)
    return client.post(url.removeprefix(PUBLIC), urlencode(params), content_type="application/x-www-form-urlencoded",
                       HTTP_X_TWILIO_SIGNATURE=signature)  # fmt: skip
