"""Roles: every row of the privacy table (dashboard/access.py) tried by each role and by a
staff user with no group. Allowed means the view ran; refused means 403 and an audit row
(websockets: closed with 4403)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import Group
from django.utils import timezone

from broadcasts.models import Broadcast, Recipient
from comms_platform.routing import websocket_urlpatterns
from conversations.models import Conversation
from conversations.services import conversation_record
from dashboard import access, connectivity
from dashboard.access import ACCESS, ROLES, Access
from dashboard.roles import roles_sync
from dossiers.models import AuditLog, Call, Contact
from dossiers.services import artifact_store
from event_webhooks.models import WebhookDelivery
from event_webhooks.services import endpoint_create
from orchestrator.models import Task
from orchestrator.services import task_create
from tests.dashboard.conftest import inbound, register_console_types

pytestmark = pytest.mark.django_db
PEOPLE = [*ROLES, None]  # None: staff, no group


@pytest.fixture(autouse=True)
def roles(db) -> None:
    """The migration creates the groups; a transactional test earlier in the run flushes them."""
    if Group.objects.filter(name__in=ROLES).count() != len(ROLES):
        roles_sync(roles=ROLES)


@pytest.fixture
def world(monkeypatch) -> dict[str, str]:
    """One of everything a row's path can name."""
    register_console_types()
    monkeypatch.setattr(connectivity, "run_checks", list)  # the page, not the network
    ada = Contact.objects.create(name="Ada Lovelace", phone="+14155550101", email="ada@example.com",
                                 whatsapp="whatsapp:+14155550101")  # fmt: skip
    task = inbound(ada, "Where is my order?")
    call_task, _ = task_create(type="call.outbound", payload={"to": ada.phone}, contact_id=ada.pk)
    Task.objects.filter(pk=call_task.pk).update(status="in_progress")
    Call.objects.create(contact=ada, task=call_task, from_address="+14155550000", to_address=ada.phone,
                        status="in-progress", provider_sid="CA" + "d" * 32, occurred_at=timezone.now())  # fmt: skip
    failed = Task.objects.create(type="sms.send", channel="sms", status="failed", contact=ada,
                                 payload={"to": ada.phone, "body": "hi"})  # fmt: skip
    artifact = artifact_store(content=b"hello", content_type="text/plain", kind="text", contact_id=ada.pk)
    conversation = conversation_record(contact_id=ada.pk, channel="sms", direction="inbound",
                                       occurred_at=timezone.now(), task_id=task.pk)  # fmt: skip
    endpoint, _ = endpoint_create(url="http://127.0.0.1:9/hooks", event_types=["task.failed"])
    delivery = WebhookDelivery.objects.create(webhook_id="msg_roles", endpoint=endpoint, url=endpoint.url,
                                              event_type="task.failed", payload={"type": "task.failed"})  # fmt: skip
    broadcast = Broadcast.objects.create(name="Spring sale", channel="sms", body="Hi {{ name }}",
                                         status="running", total=1)  # fmt: skip
    Recipient.objects.create(broadcast=broadcast, line=2, address=ada.phone, variables={"name": "Ada"})
    return {"broadcast": str(broadcast.pk), "endpoint": str(endpoint.pk), "delivery": str(delivery.pk),
            "conversation": str(conversation.pk), "call": str(call_task.pk), "task": str(failed.pk),
            "contact": str(ada.pk), "artifact": str(artifact.pk), "correlation": task.correlation_id}  # fmt: skip


@pytest.fixture
def person(request, django_user_model):
    role = request.param
    user = django_user_model.objects.create_user(f"user-{role or 'none'}", password="pw-long-enough-1",
                                                  is_staff=True)  # fmt: skip
    if role:
        user.groups.add(Group.objects.get(name=role))
    return role, user


def _request(client, row: Access, path: str):
    path, _, action = path.partition("#")
    if row.method == "GET":
        return client.get(path)
    if path.startswith("/api/"):
        body = (
            {"channel": "sms", "status": "opted_in"}
            if path.endswith("/consent/")
            else {"phone": "+14155550199"}
        )
        return client.post(path, data=json.dumps(body), content_type="application/json")
    return client.post(path, {"action": action, "body": "On its way!"})


def _connect(path: str, user) -> int | None:
    """None when the socket was accepted, else the close code."""

    async def attempt() -> int | None:
        communicator = WebsocketCommunicator(URLRouter(websocket_urlpatterns), path)
        communicator.scope["user"] = user
        connected, code = await communicator.connect()
        if connected:
            await communicator.disconnect()
            return None
        return code

    return async_to_sync(attempt)()


@pytest.mark.parametrize("person", PEOPLE, indirect=True, ids=[r or "staff-no-group" for r in PEOPLE])
@pytest.mark.parametrize("row", ACCESS, ids=[f"{r.method} {r.path}" for r in ACCESS])
def test_each_role_gets_what_the_privacy_table_says(client, world, person, row: Access):
    role, user = person
    expected = access.allowed(role, row.perm)
    path = row.path.format(**world)
    if row.kind == "websocket":
        code = _connect(path, user)
        assert (code is None) is expected, (role, row.what, code)
        return
    client.force_login(user)
    response = _request(client, row, path)
    if expected:
        assert response.status_code not in (401, 403), (role, row.what, response.status_code)
        assert not (response.status_code == 302 and "/login/" in response["Location"])
        assert response.status_code < 500
    else:
        assert response.status_code == 403, (role, row.what, response.status_code)
        denied = AuditLog.objects.filter(action="denied", actor=user.username)
        assert denied.filter(object_id=path.partition("#")[0]).exists(), (role, row.what)


def test_refusals_that_change_state_change_nothing(client, world, django_user_model):
    """A staff user without a group cannot reply, resolve, cancel or export: nothing moves."""
    user = django_user_model.objects.create_user("stan", password="pw-long-enough-1", is_staff=True)
    client.force_login(user)
    tasks_before = Task.objects.count()
    conversation = f"/admin/conversations/{world['conversation']}/"
    assert client.post(conversation, {"action": "reply", "body": "hi"}).status_code == 403
    assert client.post(f"/admin/orchestrator/task/{world['task']}/retry/").status_code == 403
    assert client.post(f"/admin/calls/{world['call']}/").status_code == 403
    assert Task.objects.count() == tasks_before
    assert Task.objects.get(pk=world["call"]).status == "in_progress"
    assert Conversation.objects.get(pk=world["conversation"]).assignee is None
    assert client.get(f"/api/contacts/{world['contact']}/export/").status_code == 403
    assert AuditLog.objects.filter(action="denied", actor="stan").count() == 4
    assert not AuditLog.objects.filter(action="export").exists()


def test_the_migration_creates_exactly_the_tables_groups():
    import importlib

    migration = importlib.import_module("dashboard.migrations.0007_roles_broadcasts_digests")
    assert {name: set(perms) for name, perms in migration.ROLES.items()} == {
        n: set(p) for n, p in ROLES.items()
    }


def test_the_groups_hold_exactly_the_tables_permissions():
    for name, perms in ROLES.items():
        group = Group.objects.get(name=name)
        held = {
            f"{p.content_type.app_label}.{p.codename}"
            for p in group.permissions.select_related("content_type")
        }
        assert held == set(perms), name


def test_docs_privacy_holds_the_table_generated_from_the_code():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "privacy.md").read_text()
    assert access.markdown_table() in doc, (
        "regenerate the table: python -c 'from dashboard import access; ...'"
    )
