from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings
from django.utils import timezone

from dossiers.models import Contact
from orchestrator.api.auth import digest
from orchestrator.models import ApiKey, Task

pytestmark = pytest.mark.django_db


def test_healthz(client):
    response = client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_readyz_reports_each_dependency(client, settings):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"]["database"] == "ok"
    assert ("redis" in response.json()["checks"]) == bool(settings.REDIS_URL)


@override_settings(REDIS_URL="redis://:hunter2@127.0.0.1:1/0")
def test_readyz_names_what_failed_without_leaking_the_url(client):
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["failed"] == ["redis"]
    assert body["checks"]["database"] == "ok"
    assert "hunter2" not in response.content.decode()


def test_create_api_key_prints_a_working_key_once(client):
    out = io.StringIO()
    call_command("create_api_key", "billing", "--quiet", stdout=out)
    key = out.getvalue().strip()
    row = ApiKey.objects.get(name="billing")
    assert row.digest == digest(key)
    assert client.get("/api/tasks/", HTTP_AUTHORIZATION=f"Api-Key {key}").status_code == 200


def test_create_api_key_agent_role(far_agent):
    call_command("create_api_key", "far-agent", "--agent", "far", stdout=io.StringIO())
    key = ApiKey.objects.get(name="far-agent")
    assert (key.role, key.agent_registration, key.task_types) == ("agent", far_agent, [])


def test_create_api_key_scopes_and_expiry():
    call_command("create_api_key", "crm", "--types", "sms.send,email.send", "--contacts", "read",
                 "--expires-in-days", "30", stdout=io.StringIO())  # fmt: skip
    key = ApiKey.objects.get(name="crm")
    assert (key.task_types, key.contacts, key.all_tasks) == (["sms.send", "email.send"], "read", False)
    assert 29 < (key.expires_at - timezone.now()).days + 1 <= 30


def test_create_api_key_refuses_an_agent_that_is_not_remote():
    with pytest.raises(CommandError, match="No remote agent named 'messaging'"):
        call_command("create_api_key", "x", "--agent", "messaging", stdout=io.StringIO())


def test_seed_demo_is_idempotent(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        call_command("seed_demo", stdout=io.StringIO())
        call_command("seed_demo", stdout=io.StringIO())
    assert Contact.objects.count() == 3
    assert Task.objects.filter(correlation_id="demo").count() == 3
    assert ApiKey.objects.filter(name="demo").count() == 1


def test_ensure_operator_generates_a_password_once(monkeypatch):
    from django.contrib.auth import get_user_model

    monkeypatch.delenv("OPERATOR_PASSWORD", raising=False)
    out = io.StringIO()
    call_command("ensure_operator", stdout=out)
    assert "password:" in out.getvalue()
    user = get_user_model().objects.get(username="operator")
    assert user.is_superuser and user.is_staff
    again = io.StringIO()
    call_command("ensure_operator", stdout=again)
    assert "exists" in again.getvalue()


def test_sweep_tasks_command_reports():
    out = io.StringIO()
    call_command("sweep_tasks", "--older-than", "0", stdout=out)
    assert out.getvalue().startswith("resent 0, expired 0")


def test_openapi_schema_and_docs(client, api_key):
    schema = client.get("/api/schema/", HTTP_AUTHORIZATION=f"Api-Key {api_key}")
    assert schema.status_code == 200
    assert b"/api/tasks/{id}/cancel/" in schema.content
    assert client.get("/api/docs/", HTTP_AUTHORIZATION=f"Api-Key {api_key}").status_code == 200
