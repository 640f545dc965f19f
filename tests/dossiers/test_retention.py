"""Retention with a frozen clock, --dry-run, and forget_contact leaving no trace."""

from __future__ import annotations

import io
import json
import re
from datetime import timedelta

import pytest
from django.apps import apps
from django.core.management import call_command
from django.core.serializers import serialize

from agents.common.models import WebhookEvent
from dossiers.models import Artifact, AuditLog, Call, Contact, Email, Message, TranscriptTurn
from dossiers.retention import retention_apply
from dossiers.services import artifact_store
from orchestrator.models import Task
from orchestrator.services import task_create, task_transition
from tests.dossiers.factories import alice, at, bob, call, email, message

pytestmark = pytest.mark.django_db

NOW = at(0) + timedelta(days=400)  # the frozen clock: T0 is 400 days before


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    settings.RETENTION_DAYS = {"messages": 365, "calls": 365, "recordings": 90, "emails": 365,
                               "artifacts": 180, "webhook_events": 30, "tasks": 730, "audit": 2190}  # fmt: skip
    return tmp_path


def blob(contact, *, kind: str, days_ago: float, content: bytes = b"data"):
    stored = artifact_store(content=content, content_type="text/plain", kind=kind, contact_id=contact.id)
    Artifact.objects.filter(pk=stored.pk).update(occurred_at=NOW - timedelta(days=days_ago))
    return Artifact.objects.get(pk=stored.pk)


def ago(days: float):
    return NOW - timedelta(days=days)


def seed():
    a = alice()
    old_rec, new_rec = blob(a, kind="recording", days_ago=100), blob(a, kind="recording", days_ago=10)
    old_doc, new_doc = blob(a, kind="document", days_ago=200), blob(a, kind="document", days_ago=100)
    old_msg, new_msg = message(a, 0), message(a, 0)
    Message.objects.filter(pk=new_msg.pk).update(occurred_at=ago(300))
    old_call = call(a, 0)
    html = blob(a, kind="html", days_ago=20)
    old_email = email(a, 0, html=html)  # 400 days: goes, and takes its (recent) HTML body with it
    old_event = WebhookEvent.objects.create(provider="twilio", kind="sms", dedupe_key="old", payload={})
    new_event = WebhookEvent.objects.create(provider="twilio", kind="sms", dedupe_key="new", payload={})
    WebhookEvent.objects.filter(pk=old_event.pk).update(received_at=ago(31))
    WebhookEvent.objects.filter(pk=new_event.pk).update(received_at=ago(29))
    return locals()


def test_expired_rows_and_blobs_go_and_the_rest_stays(media):
    s = seed()
    report = retention_apply(now=NOW)
    assert report.counts == {"messages": 1, "calls": 1, "emails": 1, "recordings": 1, "artifacts": 1,
                             "webhook_events": 1, "tasks": 0, "abandoned_tasks": 0, "digests": 0, "audit_entries": 0,
                             "smoke_contacts": 0}  # fmt: skip
    assert report.blobs == 3
    assert list(Message.objects.values_list("pk", flat=True)) == [s["new_msg"].pk]
    assert not Call.objects.exists() and not Email.objects.exists()
    assert set(Artifact.objects.values_list("pk", flat=True)) == {s["new_rec"].pk, s["new_doc"].pk}
    for gone in ("old_rec", "old_doc", "html"):
        assert not (media / s[gone].storage_key).exists(), gone
    for kept in ("new_rec", "new_doc"):
        assert (media / s[kept].storage_key).read_bytes() == b"data"
    assert list(WebhookEvent.objects.values_list("dedupe_key", flat=True)) == ["new"]
    assert AuditLog.objects.get(action="retention").details["blobs"] == 3


def test_finished_tasks_expire_but_unfinished_ones_stay():
    done, _ = task_create(type="diagnostic.echo")
    waiting, _ = task_create(type="diagnostic.echo", scheduled_for=NOW + timedelta(days=1))
    Task.objects.filter(pk=done.pk).update(status="succeeded", finished_at=ago(731))
    Task.objects.filter(pk=waiting.pk).update(status="pending", created_at=ago(900))
    assert retention_apply(now=NOW).counts["tasks"] == 1
    assert list(Task.objects.values_list("pk", flat=True)) == [waiting.pk]


def test_dry_run_counts_and_changes_nothing(media):
    s = seed()
    before = _snapshot()
    out = io.StringIO()
    report = retention_apply(now=NOW, dry_run=True)
    call_command("apply_retention", "--dry-run", stdout=out)  # real clock: T0 is in the past too
    assert report.counts["recordings"] == 1 and report.blobs == 3
    assert "would delete" in out.getvalue()
    assert _snapshot() == before
    assert (media / s["old_rec"].storage_key).exists()
    assert not AuditLog.objects.exists()


def test_command_reports_counts():
    seed()
    out = io.StringIO()
    call_command("apply_retention", stdout=out)
    assert "messages         deleted 2" in out.getvalue()  # the real clock is past both


def _snapshot() -> str:
    models = [
        m for m in apps.get_models() if m._meta.app_label in ("dossiers", "agents_common", "orchestrator")
    ]
    return "".join(serialize("json", m.objects.all()) for m in models)


# --- forget_contact -------------------------------------------------------------------------


def test_forget_contact_leaves_no_trace_of_phone_email_or_bodies(media):
    a, b = alice(), bob()
    secret_body = "my door code is 7319, call me"
    task, _ = task_create(type="diagnostic.echo", contact_id=a.id,
                          payload={"to": a.phone, "body": secret_body})  # fmt: skip
    task_transition(task_id=task.id, to="cancelled", actor="test", details={"to": a.phone})
    stranger_task, _ = task_create(type="diagnostic.echo", payload={"note": f"forward to {a.email}"})
    message(a, 1, body=secret_body, task=task)
    inbound = message(None, 2, direction="inbound", body="unknown sender")
    Message.objects.filter(pk=inbound.pk).update(from_address=a.phone)
    c = call(a, 3, recording=blob(a, kind="recording", days_ago=1, content=f"audio {secret_body}".encode()))
    TranscriptTurn.objects.create(call=c, sequence=1, speaker="caller", text=secret_body, started_at=at(3))
    email(a, 4, subject="Door code", html=blob(a, kind="html", days_ago=1, content=b"<p>Dear Alice</p>"))
    WebhookEvent.objects.create(provider="twilio", kind="sms", dedupe_key="e1",
                                payload={"From": a.phone, "Body": secret_body})  # fmt: skip
    WebhookEvent.objects.create(provider="twilio", kind="sms", dedupe_key="e2",
                                payload={"From": a.phone.replace("+", "%2B")})  # fmt: skip
    WebhookEvent.objects.create(
        provider="sendgrid", kind="events", dedupe_key="e3", payload={"email": a.email}
    )
    keep = WebhookEvent.objects.create(
        provider="twilio", kind="sms", dedupe_key="e4", payload={"From": b.phone}
    )
    message(b, 5, body="Bob's own message")
    bob_blob = blob(b, kind="document", days_ago=1, content=b"bob's file")

    out = io.StringIO()
    call_command("forget_contact", str(a.id), "--actor", "operator:jane", "--yes", stdout=out)

    dump = _snapshot()
    for trace in (a.phone, a.phone[1:], a.email, "Alice", secret_body):
        assert trace not in dump, trace
    # The door code, but not as four digits that happen to stand inside a random hex id.
    assert not re.search(r"(?<![0-9a-f])7319(?![0-9a-f])", dump)
    blobs = b"".join(p.read_bytes() for p in media.rglob("*") if p.is_file())
    assert b"7319" not in blobs and b"Alice" not in blobs
    assert blobs == b"bob's file"
    assert not Contact.objects.filter(pk=a.pk).exists()
    assert Task.objects.get(pk=task.pk).payload == {"erased": True}
    assert Task.objects.get(pk=stranger_task.pk).payload == {"erased": True}
    assert list(WebhookEvent.objects.values_list("pk", flat=True)) == [keep.pk]
    assert Message.objects.get().body == "Bob's own message"
    assert Artifact.objects.get().pk == bob_blob.pk
    audit = AuditLog.objects.get(action="erase")
    assert (audit.actor, audit.object_id) == ("operator:jane", str(a.id))
    assert audit.details["messages"] == 2 and audit.details["webhook_events"] == 3
    assert a.phone not in json.dumps(audit.details)
    assert "erased" in out.getvalue()


def test_forget_unknown_contact_is_a_command_error():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="No contact"):
        call_command("forget_contact", "00000000-0000-0000-0000-000000000000")
    with pytest.raises(CommandError, match="No contact"):
        call_command("forget_contact", "not-a-uuid")


# --- Every personal record (issue 16) -------------------------------------------------------


def test_unfinished_tasks_untouched_past_the_period_and_old_audit_rows_go():
    stuck, _ = task_create(type="diagnostic.echo", scheduled_for=NOW + timedelta(days=1))
    fresh, _ = task_create(type="diagnostic.echo", scheduled_for=NOW + timedelta(days=1))
    Task.objects.filter(pk=stuck.pk).update(status="in_progress", updated_at=ago(731))
    Task.objects.filter(pk=fresh.pk).update(status="in_progress", updated_at=ago(10))
    old = AuditLog.objects.create(actor="x", action="view_dossier", object_type="contact", object_id="1")
    AuditLog.objects.filter(pk=old.pk).update(at=ago(2191))
    recent = AuditLog.objects.create(actor="y", action="view_dossier", object_type="contact", object_id="2")
    dry = retention_apply(now=NOW, dry_run=True).counts
    assert (dry["abandoned_tasks"], dry["audit_entries"]) == (1, 1)
    report = retention_apply(now=NOW)
    assert (report.counts["abandoned_tasks"], report.counts["audit_entries"]) == (1, 1)
    assert list(Task.objects.values_list("pk", flat=True)) == [fresh.pk]
    assert set(AuditLog.objects.exclude(action="retention").values_list("pk", flat=True)) == {recent.pk}


def test_smoke_contacts_are_erased_an_hour_after_creation_real_ones_never(media):
    from django.utils import timezone

    smoke = Contact.objects.create(name="Smoke test", phone="+14155550177", synthetic=True)
    young = Contact.objects.create(name="Smoke test", phone="+14155550178", synthetic=True)
    real = alice()
    Contact.objects.filter(pk__in=[smoke.pk, real.pk]).update(created_at=timezone.now() - timedelta(hours=2))
    task, _ = task_create(type="diagnostic.echo", contact_id=smoke.id, payload={"to": smoke.phone})
    assert retention_apply(dry_run=True).counts["smoke_contacts"] == 1
    assert Contact.objects.filter(pk=smoke.pk).exists()
    assert retention_apply().counts["smoke_contacts"] == 1
    assert set(Contact.objects.values_list("pk", flat=True)) == {young.pk, real.pk}
    assert Task.objects.get(pk=task.pk).payload == {"erased": True}
    assert AuditLog.objects.get(action="erase").actor == "retention (smoke contact)"


def test_resolving_a_conversation_finishes_its_inbound_task_so_retention_removes_it(django_user_model):
    from conversations.models import ConversationTask
    from conversations.services import conversation_resolve
    from tests.dashboard.conftest import inbound, register_console_types

    register_console_types()
    operator = django_user_model.objects.create_user("oli", password="pw-long-enough-1", is_staff=True)
    task = inbound(alice(), "please call me back")
    Task.objects.filter(pk=task.pk).update(status="in_progress")  # parked for the operators
    conversation_id = ConversationTask.objects.get(task=task).conversation_id
    assert conversation_resolve(conversation_id=conversation_id, user=operator) == 1
    task.refresh_from_db()
    assert (task.status, task.events.last().actor) == ("succeeded", "operator:oli")
    Task.objects.filter(pk=task.pk).update(finished_at=NOW - timedelta(days=731))
    assert retention_apply(now=NOW).counts["tasks"] == 1
    assert not Task.objects.filter(pk=task.pk).exists()
