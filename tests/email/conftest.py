from __future__ import annotations

import pytest

from dossiers.models import Contact
from tests.fakes.sendgrid import FakeSendGrid
from tests.fakes.smtp import SmtpServer


@pytest.fixture
def sendgrid(settings):
    """The real SendGrid provider pointed at a local fake of the v3 API."""
    with FakeSendGrid() as fake:
        settings.EMAIL_SIMULATED = False
        settings.EMAIL_PROVIDER = "sendgrid"
        settings.EMAIL_FALLBACK_PROVIDER = ""
        settings.SENDGRID_API_KEY = fake.api_key
        settings.SENDGRID_API_BASE_URL = fake.url
        yield fake


@pytest.fixture
def smtp_server(settings):
    with SmtpServer() as server:
        settings.EMAIL_HOST = "127.0.0.1"
        settings.EMAIL_PORT = server.port
        settings.EMAIL_HOST_USER = ""
        settings.EMAIL_HOST_PASSWORD = ""
        settings.EMAIL_USE_TLS = False
        yield server.collector


@pytest.fixture
def ada(db) -> Contact:
    return Contact.objects.create(name="Ada Lovelace", email="ada@example.org", phone="+14155550101")
