"""Digests through the API (validation, what an item shows), the sweep when the ETA message was
lost, the flush_digests command and the admin list."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command

from orchestrator import services
from orchestrator.models import Digest, Task
from orchestrator.registry import payload_schemas
from orchestrator.states import TaskStatus
from tests.digests.conftest import PHONE, item, sent_to
from tests.support.services import transactional_db

S = TaskStatus


def post(api, body: dict):
    return api.post("/api/tasks/", data=json.dumps(body), content_type="application/json")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("digest", "field"),
    [
        ({"key": "k", "window_seconds": 0}, "payload.digest.window_seconds"),
        ({"key": "k", "window_seconds": 7 * 24 * 3600 + 1}, "payload.digest.window_seconds"),
        ({"key": "k", "window_seconds": "ten minutes"}, "payload.digest.window_seconds"),
        ({"key": "k"}, "payload.digest.window_seconds"),
        ({"window_seconds": 600}, "payload.digest.key"),
        ({"key": "", "window_seconds": 600}, "payload.digest.key"),
        ({"key": "k", "window_seconds": 600, "body": "{% for i in items %}"}, "payload.digest.body"),
        (
            {"key": "k", "window_seconds": 600, "subject": "{{ count|nosuchfilter }}"},
            "payload.digest.subject",
        ),
        ("order-updates", "payload.digest"),
    ],
)
def test_a_bad_digest_is_a_400_naming_the_field(api, ada, digest, field):
    response = post(
        api, {"type": "notify", "contact": str(ada.id), "payload": {"body": "hi", "digest": digest}}
    )
    assert response.status_code == 400, response.content
    assert field in [p["field"] for p in response.json()["error"]["problems"]]
    assert not Task.objects.exists()


@pytest.mark.django_db
def test_a_digest_item_needs_a_body_or_text(api, ada):
    response = post(api, {"type": "notify", "contact": str(ada.id),
                          "payload": {"template": "order_shipped", "digest": {"key": "k", "window_seconds": 60}}})  # fmt: skip
    assert response.status_code == 400
    assert "payload.body" in [p["field"] for p in response.json()["error"]["problems"]]


def test_the_payload_schema_documents_the_digest_fields():
    spec = payload_schemas()["notify"]
    digest = spec.serializer().fields["digest"]
    assert set(digest.fields) == {"key", "window_seconds", "body", "subject"}
    assert spec.example["digest"] == {"key": "order-updates", "window_seconds": 600}


@transactional_db
def test_an_item_shows_its_digest_then_the_message_that_carried_it(api, clock, sms_route, ada):
    body = {"type": "notify", "contact": str(ada.id),
            "payload": {"body": "Order 1042 shipped", "digest": {"key": "order-updates", "window_seconds": 600}}}  # fmt: skip
    created = post(api, body)
    assert created.status_code == 201, created.content
    task_id = created.json()["id"]
    shown = api.get(f"/api/tasks/{task_id}/").json()
    digest = Digest.objects.get()
    assert shown["status"] == "in_progress"
    assert shown["result"]["digest"] == {"id": digest.id, "key": "order-updates", "status": "open",
                                         "opens_at": digest.opens_at.isoformat(),
                                         "closes_at": digest.closes_at.isoformat()}  # fmt: skip
    clock.at(600)
    services.sweep_tasks()
    shown = api.get(f"/api/tasks/{task_id}/").json()
    digest.refresh_from_db()
    assert shown["status"] == "succeeded"
    assert shown["result"]["digest"]["status"] == "sent"
    assert shown["result"]["digest"]["task"] == str(digest.task_id)
    assert shown["result"]["digest"]["items"] == 1


@transactional_db
def test_the_sweep_flushes_a_digest_whose_eta_message_was_lost(clock, sms_route, ada, monkeypatch):
    from orchestrator.services import digests

    lost = []
    monkeypatch.setattr(
        digests, "schedule_flush", lambda **kw: lost.append(kw) or False
    )  # the broker lost it
    item(ada, "one")
    item(ada, "two")
    assert len(lost) == 1  # one flush message per digest, not per item
    clock.at(599)
    assert services.sweep_tasks().digests == 0  # not before its window ends
    assert sent_to(PHONE) == []
    clock.at(615)  # the next beat after closes_at
    assert services.sweep_tasks().digests == 1
    assert sent_to(PHONE) == ["2 updates:\n- one\n- two"]
    digest = Digest.objects.get()
    assert (digest.status, digest.flushed_by) == ("sent", "sweep")
    assert services.sweep_tasks().digests == 0  # sent once


@transactional_db
def test_the_eta_flush_sends_at_closes_at_and_only_once(clock, sms_route, ada):
    from orchestrator.tasks import flush_digest

    item(ada, "one")
    digest = Digest.objects.get()
    assert flush_digest.apply(args=[digest.id]).get() == "not_due"  # early: nothing leaves
    clock.at(600)
    assert flush_digest.apply(args=[digest.id]).get() == "sent"
    assert flush_digest.apply(args=[digest.id]).get() == "closed"  # a duplicate message
    assert services.sweep_tasks().digests == 0
    assert sent_to(PHONE) == ["one"]


@transactional_db
def test_flush_digests_command_sends_due_digests_and_with_all_the_open_ones(clock, sms_route, ada):
    item(ada, "due", key="a", window=60)
    item(ada, "still open", key="b", window=3600)
    clock.at(60)
    out = io.StringIO()
    call_command("flush_digests", stdout=out)
    assert out.getvalue().strip() == "sent 1 due digest(s)"
    assert sent_to(PHONE) == ["due"]
    out = io.StringIO()
    call_command("flush_digests", "--all", stdout=out)
    assert "sent 1 digest(s)" in out.getvalue()
    assert sent_to(PHONE) == ["due", "still open"]
    assert set(Digest.objects.values_list("status", "flushed_by")) == {("sent", "sweep"), ("sent", "command")}


@transactional_db
def test_the_admin_lists_digests_with_their_counts(
    admin_client, clock, sms_route, ada, django_assert_max_num_queries
):
    for n in range(3):
        item(ada, f"item {n}", key=f"key-{n}")
    with django_assert_max_num_queries(12):
        page = admin_client.get("/admin/orchestrator/digest/?status__exact=open")
    assert page.status_code == 200
    text = page.content.decode()
    assert "key-0" in text and "key-2" in text
    digest = Digest.objects.first()
    detail = admin_client.get(f"/admin/orchestrator/digest/{digest.id}/change/")
    assert detail.status_code == 200 and str(digest.items.get().task_id) in detail.content.decode()
    flushed = admin_client.post(
        "/admin/orchestrator/digest/", {"action": "flush_now", "_selected_action": [digest.id]}
    )
    assert flushed.status_code == 302
    digest.refresh_from_db()
    assert (digest.status, digest.flushed_by) == ("sent", "admin")


@transactional_db
def test_retention_deletes_sent_digests_with_their_tasks_and_keeps_open_ones(clock, sms_route, ada, settings):
    from datetime import timedelta

    from dossiers.retention import retention_apply

    item(ada, "old news", key="old")
    clock.at(600)
    services.digests_flush_due()
    item(ada, "still collecting", key="new", window=3600)
    later = clock.now + timedelta(days=settings.RETENTION_DAYS["tasks"] + 1)
    assert retention_apply(now=later, dry_run=True).counts["digests"] == 1
    assert retention_apply(now=later).counts["digests"] == 1
    assert list(Digest.objects.values_list("key", "status")) == [("new", "open")]
