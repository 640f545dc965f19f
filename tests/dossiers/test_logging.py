"""Logs of a task's life: the taxonomy on every line, no secrets, no raw phone numbers or emails."""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog
from django.conf import settings

from comms_platform.logs import TAXONOMY
from orchestrator import registry
from orchestrator.models import AgentRegistration, Task
from orchestrator.services import task_transition

pytestmark = pytest.mark.django_db

TOKEN = "tok-9f8e7d6c5b4a39281706abcdef"
PHONE = "+14155550134"


def careless_handler(task: Task) -> None:
    """An agent that logs what it should not: the number, the token, the email."""
    to = task.payload["to"]
    structlog.get_logger("agents.careless").info(
        "sms.sending", to=to, provider="twilio", auth_token=settings.TWILIO_AUTH_TOKEN,
        note=f"using {settings.TWILIO_AUTH_TOKEN} for {to} (cc bob@example.org)",
    )  # fmt: skip
    logging.getLogger("agents.careless").warning("stdlib line: to %s key %s", to, settings.TWILIO_AUTH_TOKEN)
    task_transition(task_id=task.id, to="succeeded", actor="agent:careless")


@pytest.fixture
def captured():
    """The lines the configured handler would write, formatted by the real formatter."""
    root = logging.getLogger()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(root.handlers[0].formatter)
    root.addHandler(handler)
    structlog.contextvars.clear_contextvars()
    yield stream
    root.removeHandler(handler)
    structlog.contextvars.clear_contextvars()


@pytest.fixture
def careless_agent(db):
    AgentRegistration.objects.create(task_type="test.careless", agent="careless", channel="sms", queue="messaging",
                                     handler=f"{__name__}.careless_handler")  # fmt: skip
    registry.invalidate()


def test_task_life_logs_carry_taxonomy_without_secrets_or_phones(
    api, settings, captured, careless_agent, django_capture_on_commit_callbacks
):
    settings.TWILIO_AUTH_TOKEN = TOKEN
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(
            "/api/tasks/", {"type": "test.careless", "correlation_id": "order-42", "payload": {"to": PHONE}},
            content_type="application/json", HTTP_X_CORRELATION_ID="order-42",
        )  # fmt: skip
    assert response.status_code == 201, response.content
    task_id = response.json()["id"]
    assert Task.objects.get(id=task_id).status == "succeeded"

    text = captured.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]
    for line in lines:
        assert set(TAXONOMY) <= set(line), line
    assert TOKEN not in text and "auth_token" not in text
    assert PHONE not in text and PHONE[1:] not in text and "bob@example.org" not in text

    of_task = [line for line in lines if line["task_id"] == task_id]
    events = [line["event"] for line in of_task]
    assert events[0] == "task.started" and events[-1] == "task.finished"
    assert "sms.sending" in events and any(e.startswith("stdlib line") for e in events)
    for line in of_task:
        assert (line["correlation_id"], line["channel"], line["agent"]) == ("order-42", "sms", "careless")
    sending = next(line for line in of_task if line["event"] == "sms.sending")
    assert sending["provider"] == "twilio"
    assert sending["to"] == "[phone …34]"
    assert "[secret]" in sending["note"] and "b•••@example.org" in sending["note"]
    assert of_task[-1]["status"] == "done"
    request_line = next(line for line in lines if line["event"] == "http.request")
    assert request_line["correlation_id"] == "order-42" and request_line["http_status"] == 201


def test_secrets_from_the_environment_are_dropped(monkeypatch, captured):
    from comms_platform import logs

    monkeypatch.setenv("SENDGRID_API_KEY", "SG.live-key-abcdef123456")
    logs._environment_secrets.cache_clear()
    try:
        structlog.get_logger("t").info(
            "calling with SG.live-key-abcdef123456", headers={"Authorization": "x"}
        )
    finally:
        logs._environment_secrets.cache_clear()
    line = json.loads(captured.getvalue())
    assert line["event"] == "calling with [secret]"
    assert line["headers"] == {}


def test_console_format_is_available():
    from comms_platform.logs import logging_config

    config = logging_config(level="INFO", fmt="console")
    renderer = config["formatters"]["structured"]["processors"][-1]
    assert isinstance(renderer, structlog.dev.ConsoleRenderer)


def test_webhook_lines_carry_the_provider(client, captured):
    from django.test import RequestFactory

    from agents.common.webhooks import WebhookView

    class Probe(WebhookView):
        provider, kind = "twilio", "sms-status"

        def verify(self, request):
            return True

        def dedupe_key(self, event):
            return event["MessageSid"]

        def process(self, event, record):
            structlog.get_logger("agents.probe").info("sms.status", status=event["MessageStatus"])
            return "applied"

    request = RequestFactory().post("/webhooks/twilio/sms-status/", {"MessageSid": "SM1", "MessageStatus": "delivered",
                                                                      "To": PHONE})  # fmt: skip
    response = Probe.as_view()(request)
    assert response.status_code == 200
    lines = [json.loads(line) for line in captured.getvalue().splitlines()]
    status_line = next(line for line in lines if line["event"] == "sms.status")
    assert (status_line["provider"], status_line["status"]) == ("twilio", "delivered")
    assert any(line["event"] == "webhook twilio/sms-status: applied" for line in lines)
    assert PHONE not in captured.getvalue()


def test_request_lines_come_from_django_structlog_with_our_fields(client, captured):
    """django-structlog's RequestMiddleware binds the context; the line keeps our names and
    never holds the query string or the client's address."""
    response = client.get(
        "/healthz?To=%2B14155550134", HTTP_X_REQUEST_ID="req-77", HTTP_X_CORRELATION_ID="c" * 300
    )
    assert response["X-Request-Id"] == "req-77"
    client.get("/static/none.css")
    lines = [json.loads(line) for line in captured.getvalue().splitlines()]
    requests = [line for line in lines if line["event"].startswith(("http.request", "request_"))]
    assert [line["event"] for line in requests] == ["http.request"]
    (line,) = requests
    assert (line["method"], line["path"], line["http_status"]) == ("GET", "/healthz", response.status_code)
    assert line["request_id"] == "req-77" and line["correlation_id"] == "c" * 128
    assert line["duration_ms"] >= 0 and "user_id" in line
    assert not {"ip", "request", "code"} & set(line)
    assert "14155550134" not in captured.getvalue()
