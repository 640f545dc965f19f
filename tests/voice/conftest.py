from __future__ import annotations

import pytest
from django.conf import settings
from twilio.request_validator import RequestValidator

from agents.voice import services
from orchestrator.models import Task
from tests.fakes.openai_stream import FakeOpenAIStream

PAYLOAD = {
    "to": "+14155550123",
    "goal": "confirm tomorrow's delivery window",
    "persona": "You are Ada from Acme Deliveries.",
    "greeting": "Hi, this is Ada from Acme.",
    "language": "en-US",
    "voice": "en-US-Journey-O",
    "max_duration_seconds": 600,
    "record": False,
    "machine_detection": "",
}


def twilio_sign(url: str, params: dict | None = None) -> str:
    return RequestValidator(settings.TWILIO_AUTH_TOKEN).compute_signature(url, params or {})


def make_call_task(*, status: str = "in_progress", **payload_overrides):
    """A call.outbound task in ``status`` with its Call row, written directly: no dispatch,
    so no handler and no simulated callee run behind the test's back."""
    task = Task.objects.create(type="call.outbound", channel="voice", status=status, agent="voice",
                               payload={**PAYLOAD, **payload_overrides}, correlation_id="corr-1")  # fmt: skip
    call = services.call_create(task_id=task.id, to=task.payload["to"], from_address="+15005550006",
                                correlation_id="corr-1")  # fmt: skip
    return task, call


@pytest.fixture
def call_task(db):
    return make_call_task()


@pytest.fixture
def fake_openai(settings):
    with FakeOpenAIStream() as fake:
        settings.OPENAI_BASE_URL = fake.base_url
        settings.OPENAI_API_KEY = "sk-test-key"
        settings.OPENAI_MODEL = "gpt-test"
        yield fake
