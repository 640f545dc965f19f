"""No configured secret ever shows in logs, stdout/stderr or error pages.

Every secret gets a distinctive value; then a task's whole life (API intake, the real
twilio SDK against the local fake, a signed status callback), a refused webhook and 500s
(API, webhook and console page, each raised by an exception that carries the secret in its
message) run while everything written is captured; none of the values may appear.
"""

from __future__ import annotations

import logging

import pytest
from django.test import Client
from twilio.request_validator import RequestValidator

from orchestrator.models import Task
from orchestrator.states import TaskStatus
from tests.fakes.twilio import FakeTwilio

pytestmark = pytest.mark.django_db

PUBLIC = "https://comms.example.com"
ACCOUNT = "AC" + "5" * 32
SECRETS = {
    "TWILIO_AUTH_TOKEN": "twiliotok3n5ecretvalue0000000001",
    "SENDGRID_API_KEY": "SG.sendgrid-secret-value-0002",
    "OPENAI_API_KEY": "sk-openai-secret-value-0003",
    "SECRET_KEY": "django-secret-key-value-0004-abcdefghijklmnopqrstuvwxyz",
    "EMAIL_HOST_PASSWORD": "smtp-password-value-0005",
    "METRICS_TOKEN": "metrics-token-value-0006",
}
REMOTE_SECRET = "remote-agent-secret-value-0007"
PREVIOUS_TOKEN = "twilioprev10usvalue00000000000008"


@pytest.fixture
def secret_settings(settings):
    for name, value in SECRETS.items():
        setattr(settings, name, value)
    settings.REMOTE_AGENT_SECRETS = [REMOTE_SECRET]
    settings.TWILIO_PREVIOUS_AUTH_TOKENS = [PREVIOUS_TOKEN]
    settings.TWILIO_ACCOUNT_SID = ACCOUNT
    settings.TWILIO_SMS_FROM = "+15005550006"
    settings.TWILIO_MESSAGING_SERVICE_SID = ""
    settings.PUBLIC_BASE_URL = PUBLIC
    settings.MESSAGING_SIMULATED_CALLBACKS = False
    settings.MESSAGING_RATE_PER_SECOND = 0
    settings.REDIS_URL = ""
    settings.DEBUG = False
    settings.DEBUG_PROPAGATE_EXCEPTIONS = False
    return settings


class Boom(RuntimeError):
    pass


def every_secret(api_key: str) -> dict[str, str]:
    return {**SECRETS, "REMOTE_AGENT_SECRET": REMOTE_SECRET, "TWILIO_PREVIOUS_AUTH_TOKENS": PREVIOUS_TOKEN,
            "api key": api_key}  # fmt: skip


def test_no_secret_in_logs_output_or_error_pages(secret_settings, api_key, capfd, monkeypatch,
                                                 django_user_model, django_capture_on_commit_callbacks):  # fmt: skip
    # What the platform's log handler writes (its own formatter, into a buffer we can read;
    # its stream was bound to stderr before capfd started).
    import io

    import structlog

    root = logging.getLogger()
    [platform_handler] = [
        h for h in root.handlers if isinstance(h.formatter, structlog.stdlib.ProcessorFormatter)
    ]
    written = io.StringIO()
    tap = logging.StreamHandler(written)
    tap.setFormatter(platform_handler.formatter)
    root.addHandler(tap)
    token = SECRETS["TWILIO_AUTH_TOKEN"]
    fake = FakeTwilio(account_sid=ACCOUNT, auth_token=token).start()
    secret_settings.TWILIO_API_BASE_URL = fake.base_url
    client = Client(raise_request_exception=False, HTTP_AUTHORIZATION=f"Api-Key {api_key}")
    bodies: list[str] = []
    try:
        # A task's whole life.
        with django_capture_on_commit_callbacks(execute=True):
            created = client.post("/api/tasks/", {"type": "sms.send", "payload": {"to": "+14155550100",
                                  "body": "hello"}}, content_type="application/json")  # fmt: skip
        assert created.status_code == 201, created.content
        bodies.append(created.content.decode())
        task = Task.objects.get(id=created.json()["id"])
        assert task.status == TaskStatus.IN_PROGRESS and fake.posts()[0].authorized
        url = f"{PUBLIC}/webhooks/twilio/messaging/status/?task={task.id}"
        params = {"MessageSid": task.provider_id, "MessageStatus": "delivered", "AccountSid": ACCOUNT}
        signature = RequestValidator(token).compute_signature(url, params)
        ok = client.post(url.removeprefix(PUBLIC), params, HTTP_X_TWILIO_SIGNATURE=signature)
        assert ok.status_code in (200, 204)
        task.refresh_from_db()
        assert task.status == TaskStatus.SUCCEEDED
        bodies.append(client.get(f"/api/tasks/{task.id}/").content.decode())
        bodies.append(client.get(f"/api/tasks/{task.id}/events/").content.decode())

        # A refused webhook (forged signature, and a signature made with the secret for another URL).
        forged = client.post(url.removeprefix(PUBLIC), params, HTTP_X_TWILIO_SIGNATURE="Zm9yZ2Vk")
        other = RequestValidator(token).compute_signature("https://evil.example/x", params)
        moved = client.post(url.removeprefix(PUBLIC), params, HTTP_X_TWILIO_SIGNATURE=other)
        assert forged.status_code == moved.status_code == 403
        bodies += [forged.content.decode(), moved.content.decode()]

        # 500s whose exception message carries a secret: API, webhook, console page.
        def explode(*args, **kwargs):
            raise Boom(f"upstream refused credentials {token} {SECRETS['SENDGRID_API_KEY']} {api_key}")

        from agents.messaging import webhooks
        from orchestrator.api import views

        monkeypatch.setattr(views.TaskListCreateView, "list", explode)
        monkeypatch.setattr(webhooks.StatusCallbackView, "verify", explode)
        for response in (
            client.get("/api/tasks/"),
            client.post(url.removeprefix(PUBLIC), params, HTTP_X_TWILIO_SIGNATURE=signature),
        ):
            assert response.status_code == 500
            bodies.append(response.content.decode())
        staff = django_user_model.objects.create_user("sam", "s@example.com", "pw-sam-12345", is_staff=True,
                                                      is_superuser=True)  # fmt: skip
        client.force_login(staff)
        from django.contrib import admin

        monkeypatch.setattr(type(admin.site._registry[Task]), "get_queryset", explode)
        page = client.get("/admin/orchestrator/task/")
        assert page.status_code == 500
        bodies.append(page.content.decode())
    finally:
        fake.stop()
        root.removeHandler(tap)
    out, err = capfd.readouterr()
    err += written.getvalue()
    # The 500s were logged with their traceback, so the grep below did see them. (caplog holds
    # the raw records before the platform's formatter scrubs them; what is written is below.)
    assert err.count("Boom") >= 3
    captured = {"stdout": out, "stderr": err, "responses": "\n".join(bodies)}
    leaks = [(name, where) for name, value in every_secret(api_key).items()
             for where, text in captured.items() if value in text]  # fmt: skip
    assert leaks == []
