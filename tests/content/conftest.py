from __future__ import annotations

import pytest

from tests.fakes.openai_server import FakeOpenAI


@pytest.fixture
def openai_fake(settings):
    """The real ``openai`` SDK pointed at a local OpenAI-compatible server."""
    with FakeOpenAI() as fake:
        settings.CONTENT_SIMULATED = False
        settings.OPENAI_API_KEY = fake.api_key
        settings.OPENAI_BASE_URL = fake.base_url
        settings.OPENAI_MODEL = "test-model-1"
        settings.OPENAI_TIMEOUT_SECONDS = 5.0
        yield fake
