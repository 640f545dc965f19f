"""API keys: the task types a key may create, contacts access, owner isolation, agent keys
bound to their agent, internal types, expiry, and invalid keys throttled per address."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from dossiers.models import AuditLog, Contact
from orchestrator.api.auth import api_key_create
from orchestrator.models import ApiKey, ApiKeyRole, Task

pytestmark = pytest.mark.django_db


@pytest.fixture
def console_types(db) -> None:
    from tests.dashboard.conftest import register_console_types

    register_console_types()


def auth(key: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Api-Key {key}"}


def create(client, key: str, body: dict, **extra):
    return client.post(
        "/api/tasks/", data=json.dumps(body), content_type="application/json", **auth(key), **extra
    )


def key(name: str, **scopes) -> str:
    return api_key_create(name=name, **scopes)[1]


# --- Owners ----------------------------------------------------------------------------------


def test_a_client_sees_and_cancels_only_its_own_tasks(client, django_capture_on_commit_callbacks):
    acme, globex = key("acme"), key("globex")
    with django_capture_on_commit_callbacks(execute=True):
        mine = create(client, acme, {"type": "diagnostic.echo"}).json()["id"]
    theirs = Task.objects.create(type="sms.send", channel="sms", status="queued", source="key:999")
    listed = client.get("/api/tasks/", **auth(acme)).json()["results"]
    assert [t["id"] for t in listed] == [mine]
    assert client.get(f"/api/tasks/{theirs.id}/", **auth(acme)).status_code == 404
    assert client.get(f"/api/tasks/{mine}/", **auth(globex)).status_code == 404
    assert client.post(f"/api/tasks/{theirs.id}/cancel/", **auth(acme)).status_code == 404
    theirs.refresh_from_db()
    assert theirs.status == "queued"  # the issue's cross-client cancel: nothing changed
    assert client.get(f"/api/tasks/{mine}/", **auth(acme)).status_code == 200


def test_a_key_granted_all_tasks_sees_and_cancels_every_client_task(client):
    ops = key("ops", all_tasks=True)
    theirs = Task.objects.create(type="sms.send", channel="sms", status="queued", source="key:999")
    assert client.get(f"/api/tasks/{theirs.id}/", **auth(ops)).status_code == 200
    assert client.post(f"/api/tasks/{theirs.id}/cancel/", **auth(ops)).status_code == 200
    theirs.refresh_from_db()
    assert theirs.status == "cancelled"


# --- Task types ------------------------------------------------------------------------------


@pytest.mark.parametrize("task_type", ["sms.inbound", "whatsapp.inbound", "call.handoff"])
def test_internal_types_are_never_created_through_the_api(client, task_type, console_types):
    from orchestrator.models import AgentRegistration

    AgentRegistration.objects.get_or_create(task_type="call.handoff", defaults={"agent": "voice", "channel": "voice",
                                            "queue": "voice", "handler": "agents.voice.handlers.call_handoff"})  # fmt: skip
    for k in (key("any", task_types=["*"]), key("explicit", task_types=[task_type])):
        response = create(client, k, {"type": task_type, "payload": {"from": "+14155550101", "body": "hi"}})
        assert response.status_code == 403, response.content
        assert "created by the platform" in response.json()["error"]["message"]
    assert not Task.objects.filter(type=task_type).exists()
    unknown = create(client, key("k3"), {"type": "nope"}).json()["error"]["message"]
    assert task_type not in unknown  # not offered in the list of known types either


def test_a_key_creates_only_the_types_it_was_given(client, console_types):
    crm = key("crm", task_types=["email.send"])
    response = create(client, crm, {"type": "sms.send", "payload": {"to": "+14155550101", "body": "hi"}})
    assert response.status_code == 403
    assert response.json()["error"]["message"] == "This API key may not create sms.send tasks."
    assert not Task.objects.exists()
    calls = client.post("/api/calls/", data=json.dumps({"to": "+14155550101", "goal": "x"}),
                        content_type="application/json", **auth(crm))  # fmt: skip
    assert calls.status_code == 403
    denied = AuditLog.objects.filter(action="denied", actor="api-key:crm")
    assert set(denied.values_list("object_id", flat=True)) == {"/api/tasks/", "/api/calls/"}


# --- Contacts and dossiers -------------------------------------------------------------------


def test_contacts_access_none_read_write(client):
    ada = Contact.objects.create(name="Ada", phone="+14155550101")
    consent = {"channel": "sms", "status": "opted_out"}
    none, read, write = key("none"), key("read", contacts="read"), key("write", contacts="write")
    for path in ("/api/contacts/", f"/api/contacts/{ada.id}/", f"/api/contacts/{ada.id}/export/",
                 f"/api/contacts/{ada.id}/timeline/"):  # fmt: skip
        assert client.get(path, **auth(none)).status_code == 403, path
        assert client.get(path, **auth(read)).status_code == 200, path
    post = lambda k: client.post(f"/api/contacts/{ada.id}/consent/", data=json.dumps(consent),  # noqa: E731
                                 content_type="application/json", **auth(k))  # fmt: skip
    assert post(read).status_code == 403
    assert not ada.consents.exists()
    assert post(write).status_code == 200
    assert ada.consents.get().status == "opted_out"


# --- Agent keys ------------------------------------------------------------------------------


def patch(client, task_id, body, k):
    return client.patch(
        f"/api/tasks/{task_id}/", data=json.dumps(body), content_type="application/json", **auth(k)
    )


def test_an_agent_key_reads_and_reports_only_its_agents_tasks(client, agent_key, far_agent):
    own = Task.objects.create(type="remote.echo", channel="system", status="dispatched", agent="far")
    other = Task.objects.create(type="remote.echo", channel="system", status="dispatched", agent="near")
    in_process = Task.objects.create(type="sms.send", channel="sms", status="in_progress", agent="messaging")
    assert patch(client, own.id, {"status": "in_progress"}, agent_key).status_code == 200
    for task in (other, in_process):
        assert client.get(f"/api/tasks/{task.id}/", **auth(agent_key)).status_code == 403
        response = patch(client, task.id, {"status": "failed", "provider_id": "SMforged"}, agent_key)
        assert response.status_code == 403
        assert response.json()["error"]["message"] == "This task is not assigned to this key's agent."
    in_process.refresh_from_db()
    assert (in_process.status, in_process.provider_id) == ("in_progress", "")  # the forged report: refused
    assert [t["id"] for t in client.get("/api/tasks/", **auth(agent_key)).json()["results"]] == [str(own.id)]
    assert create(client, agent_key, {"type": "remote.echo"}).status_code == 403
    assert client.post(f"/api/tasks/{own.id}/cancel/", **auth(agent_key)).status_code == 403


def test_an_unbound_agent_key_reports_nothing(client):
    legacy = ApiKey.objects.create(name="legacy", prefix="x", digest="d" * 64, role=ApiKeyRole.AGENT)
    from orchestrator.api.auth import digest

    legacy.digest = digest("cp_legacy-agent-key")
    legacy.save()
    task = Task.objects.create(type="remote.echo", channel="system", status="dispatched", agent="")
    response = patch(client, task.id, {"status": "in_progress"}, "cp_legacy-agent-key")
    assert response.status_code == 403
    assert "bound to no remote agent" in response.json()["error"]["message"]


def test_an_agent_key_must_name_a_remote_registration(console_types):
    from django.core.exceptions import ValidationError

    from orchestrator.models import AgentRegistration

    with pytest.raises(ValidationError, match="bound to its agent"):
        api_key_create(name="a", role=ApiKeyRole.AGENT)
    with pytest.raises(ValidationError, match="Only a remote agent"):
        api_key_create(name="b", role=ApiKeyRole.AGENT,
                       agent_registration=AgentRegistration.objects.get(task_type="sms.send"))  # fmt: skip


# --- Expiry ----------------------------------------------------------------------------------


def test_an_expired_key_is_401_even_from_the_cache(client, settings):
    settings.API_KEY_CACHE_SECONDS = 60
    api_key, k = api_key_create(name="short", expires_at=timezone.now() + timedelta(hours=1))
    assert client.get("/api/tasks/", **auth(k)).status_code == 200  # now cached
    ApiKey.objects.filter(pk=api_key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    from orchestrator.api.auth import key_cache

    key_cache.clear()
    response = client.get("/api/tasks/", **auth(k))
    assert response.status_code == 401
    assert response.json()["error"] == {"code": "key_expired", "message": "This API key has expired."}
    # a key cached while valid stops at its expiry too, without a lookup
    _, k2 = api_key_create(name="soon", expires_at=timezone.now() + timedelta(milliseconds=300))
    assert client.get("/api/tasks/", **auth(k2)).status_code == 200
    import time

    time.sleep(0.4)
    assert client.get("/api/tasks/", **auth(k2)).status_code == 401


# --- Invalid keys, throttled per address ------------------------------------------------------


@pytest.mark.parametrize("backend", ["redis", "memory"])
def test_invalid_keys_are_throttled_per_client_address(client, settings, backend, from_the_internet):
    if backend == "memory":
        settings.REDIS_URL = ""
    elif not settings.REDIS_URL:
        pytest.skip("needs Redis")
    settings.API_INVALID_KEY_LIMIT = "3/m"
    address = f"10.9.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"  # fresh counter in a shared Redis
    guesses = [client.get("/api/tasks/", REMOTE_ADDR=address, **auth(f"cp_guess{i}")) for i in range(3)]
    assert [r.status_code for r in guesses] == [401, 401, 401]
    with CaptureQueriesContext(connection) as queries:
        refused = client.get("/api/tasks/", REMOTE_ADDR=address, **auth("cp_guess4"))
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "throttled"
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert not [q for q in queries.captured_queries if "orchestrator_apikey" in q["sql"]]  # no lookup
    forged = client.get("/api/tasks/", REMOTE_ADDR=address, HTTP_X_FORWARDED_FOR="192.0.2.77", **auth("cp_x"))
    assert forged.status_code == 429  # a made-up X-Forwarded-For is not a new address
    # another address is not affected, and a valid key from it works
    good = key("good")
    assert client.get("/api/tasks/", REMOTE_ADDR="10.8.0.1", **auth(good)).status_code == 200
