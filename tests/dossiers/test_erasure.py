"""Erasure is one path: the admin's Delete (after a confirmation page) and ``forget_contact``
both run ``contact_forget``; afterwards a real ``pg_dump`` of the database and a scan of the
storage hold none of the contact's identifiers."""

from __future__ import annotations

import io
import json
import re
import subprocess

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import Group
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.client import encode_multipart

from dossiers.models import AuditLog, Contact
from dossiers.services import artifact_store
from orchestrator.api.auth import api_key_create
from tests.dashboard.conftest import register_console_types
from tests.messaging.conftest import ACCOUNT, INBOUND_URL, TOKEN, signed_post
from tests.support.services import transactional_db, unavailable

pytestmark = [pytest.mark.services]

PHONE, EMAIL, NAME = "+14155550123", "ada.erasure@example.com", "Ada Erasure"
SECRET = "my door code is 7319"
TRACES = [PHONE, PHONE[1:], PHONE.replace("+", "%2B"), EMAIL, EMAIL.replace("@", "%40"), NAME, "7319"]
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    settings.PUBLIC_BASE_URL = "https://comms.example.com"
    settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN = ACCOUNT, TOKEN
    settings.TWILIO_PREVIOUS_AUTH_TOKENS = []
    settings.MESSAGING_SIMULATED_CALLBACKS = False
    return tmp_path


@pytest.fixture
def admin_person(django_user_model):
    user = django_user_model.objects.create_user("alma", password="pw-long-enough-1", is_staff=True)
    user.groups.add(Group.objects.get(name="admin"))
    return user


def pg_dump() -> str:
    if connection.vendor != "postgresql":
        unavailable("needs PostgreSQL: the proof of erasure is a pg_dump of the database")
    db = connection.settings_dict
    result = subprocess.run(
        ["pg_dump", "--data-only", "-h", db["HOST"] or "127.0.0.1", "-p", str(db["PORT"] or 5432),
         "-U", db["USER"] or "postgres", db["NAME"]],
        capture_output=True, text=True, check=True, env={"PGPASSWORD": db.get("PASSWORD") or ""},
    )  # fmt: skip
    return result.stdout


def storage(media) -> bytes:
    return b"".join(p.read_bytes() for p in media.rglob("*") if p.is_file())


def a_life(client, admin_person, media) -> Contact:
    """The contact as the platform really meets them: created through the API with an avatar,
    an inbound SMS through the signed webhook, a reply from the console, an artifact, consent
    changed through the API, an edit in the admin."""
    register_console_types()
    key = api_key_create(name="crm", contacts="write")[1]
    auth = {"HTTP_AUTHORIZATION": f"Api-Key {key}"}
    body = {"name": NAME, "phone": PHONE, "email": EMAIL}
    created = client.post("/api/contacts/", data=json.dumps(body), content_type="application/json", **auth)
    assert created.status_code == 201, created.content
    contact = Contact.objects.get(pk=created.json()["id"])
    avatar = SimpleUploadedFile("ada.png", PNG, content_type="image/png")
    boundary = "BoUnDaRy"
    response = client.put(f"/api/contacts/{contact.pk}/avatar/", data=encode_multipart(boundary, {"file": avatar}),
                          content_type=f"multipart/form-data; boundary={boundary}", **auth)  # fmt: skip
    assert response.status_code == 200, response.content
    consent = {"channel": "email", "status": "opted_in", "detail": f"asked by {EMAIL}"}
    client.post(f"/api/contacts/{contact.pk}/consent/", data=json.dumps(consent), content_type="application/json",
                **auth)  # fmt: skip
    params = {"MessageSid": "SM" + "e" * 32, "SmsSid": "SM" + "e" * 32, "AccountSid": ACCOUNT, "From": PHONE,
              "To": "+15005550006", "Body": SECRET, "NumMedia": "0", "NumSegments": "1"}  # fmt: skip
    assert signed_post(client, INBOUND_URL, params).status_code == 200
    client.force_login(admin_person)
    assert client.get("/admin/conversations/").status_code == 200
    from conversations.models import Conversation

    conversation = Conversation.objects.get(contact=contact)
    client.post(f"/admin/conversations/{conversation.pk}/", {"action": "claim"})
    client.post(
        f"/admin/conversations/{conversation.pk}/", {"action": "reply", "body": f"Thanks {NAME}, noted"}
    )
    artifact_store(content=f"transcript: {SECRET}".encode(), content_type="text/plain", kind="transcript",
                   contact_id=contact.pk)  # fmt: skip
    LogEntry.objects.log_actions(admin_person.pk, [contact], CHANGE, change_message=f"Changed name to {NAME}")
    dump = pg_dump()
    assert PHONE in dump and EMAIL in dump and NAME in dump and "7319" in dump  # the test sees real data
    assert any(
        PHONE.encode() in p.read_bytes() or b"7319" in p.read_bytes() for p in media.rglob("*") if p.is_file()
    )
    contact.refresh_from_db()
    assert contact.avatar and (media / contact.avatar.name).exists()
    return contact


def assert_no_trace(media) -> None:
    dump = pg_dump()
    leaks = {t: [line[:160] for line in dump.splitlines() if t in line] for t in TRACES}
    assert not any(leaks.values()), leaks
    assert not [p for p in media.rglob("*") if p.is_file()], "files left in storage"


@transactional_db
def test_erasure_through_the_admin_confirms_then_leaves_no_trace(client, admin_person, media):
    contact = a_life(client, admin_person, media)
    page = client.get(f"/admin/dossiers/contact/{contact.pk}/delete/")
    assert page.status_code == 200
    html = page.content.decode()
    for kind in (
        "messages",
        "webhook events",
        "tasks scrubbed",
        "consent changes",
        "admin log entries scrubbed",
    ):
        assert f"<td>{kind}</td>" in html, kind
    assert contact.avatar.name in html
    assert "Twilio keeps its own logs" in html and "SendGrid" in html
    assert Contact.objects.filter(pk=contact.pk).exists()  # the page changed nothing

    response = client.post(f"/admin/dossiers/contact/{contact.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Contact.objects.filter(pk=contact.pk).exists()
    audit = AuditLog.objects.get(action="erase")
    assert (audit.actor, audit.object_id) == ("operator:alma", str(contact.pk))
    assert (
        audit.details["messages"] >= 1
        and audit.details["tasks_scrubbed"] >= 2
        and audit.details["files"] == 2
    )
    assert_no_trace(media)


@transactional_db
def test_forget_contact_dry_run_lists_the_same_then_the_command_erases(
    client, admin_person, media, monkeypatch
):
    contact = a_life(client, admin_person, media)
    out = io.StringIO()
    call_command("forget_contact", str(contact.pk), "--dry-run", stdout=out)
    listed = out.getvalue()
    page = client.get(f"/admin/dossiers/contact/{contact.pk}/delete/").content.decode()
    for line in listed.splitlines():
        match = re.match(r"(.+): (\d+) would go$", line)
        if match and match[1] == "files":
            assert f"Files that will be deleted ({match[2]})" in page
        elif match:
            assert f"<td>{match[1]}</td><td>{match[2]}</td>" in page, line
    assert f"file {contact.avatar.name} would go" in listed
    assert "Kept elsewhere" in listed
    assert PHONE in pg_dump()  # the dry run changed nothing

    monkeypatch.setattr("builtins.input", lambda prompt="": "nope")
    with pytest.raises(CommandError, match="Not confirmed"):
        call_command("forget_contact", str(contact.pk), stdout=io.StringIO())
    assert Contact.objects.filter(pk=contact.pk).exists()
    call_command(
        "forget_contact", str(contact.pk), "--yes", "--actor", "dpo (ticket 7)", stdout=io.StringIO()
    )
    assert AuditLog.objects.get(action="erase").actor == "dpo (ticket 7)"
    assert_no_trace(media)


def test_bulk_delete_is_not_offered_on_contacts(admin_client, db):
    Contact.objects.create(name="Bulk", phone="+14155550124")
    page = admin_client.get("/admin/dossiers/contact/")
    assert page.status_code == 200
    assert b'value="delete_selected"' not in page.content
