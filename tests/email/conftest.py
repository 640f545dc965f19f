from __future__ import annotations

import pytest

from dossiers.models import Contact
from tests.fakes.smtp import SmtpServer


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
