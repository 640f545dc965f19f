"""The tasks API: intake, reads, agent callbacks, cancellation and every kind of bad input."""

from __future__ import annotations

import json
import uuid

import pytest
from django.test import override_settings
from django.utils import timezone

from dossiers.models import Contact
from orchestrator.models import AgentRegistration, ApiKey, Task, TaskEvent
from orchestrator.states import TaskStatus

S = TaskStatus
pytestmark = pytest.mark.django_db


def post(client, body, **headers):
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post("/api/tasks/", data=data, content_type="application/json", **headers)


def test_create_runs_the_task_and_records_every_step(api, django_capture_on_commit_callbacks):
    contact = Contact.objects.create(name="Ada", phone="+14155550101")
    with django_capture_on_commit_callbacks(execute=True):
        response = post(api, {"type": "diagnostic.echo", "contact": str(contact.id), "correlation_id": "c-1",
                              "payload": {"hello": "world"}, "priority": 7})  # fmt: skip
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["type"] == "diagnostic.echo"
    assert body["channel"] == "system"
    assert body["contact"] == str(contact.id)
    task = Task.objects.get(id=body["id"])
    assert task.status == S.SUCCEEDED
    assert task.result == {"echo": {"hello": "world"}}
    steps = list(task.events.values_list("from_status", "to_status"))
    assert steps == [
        (S.PENDING, S.ROUTED),
        (S.ROUTED, S.QUEUED),
        (S.QUEUED, S.DISPATCHED),
        (S.DISPATCHED, S.SUCCEEDED),
    ]


def test_detail_shows_events(api, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        task_id = post(api, {"type": "diagnostic.echo"}).json()["id"]
    body = api.get(f"/api/tasks/{task_id}/").json()
    assert body["status"] == S.SUCCEEDED
    assert [e["to_status"] for e in body["events"]] == ["routed", "queued", "dispatched", "succeeded"]


def test_list_filters_and_cursor_pagination(api):
    contact = Contact.objects.create(name="Grace")
    for i in range(5):
        Task.objects.create(
            type="diagnostic.echo", channel="system", status=S.FAILED, correlation_id=f"c{i % 2}"
        )
    Task.objects.create(type="sms.send", channel="sms", status=S.PENDING, contact=contact)
    assert [t["channel"] for t in api.get("/api/tasks/?channel=sms").json()["results"]] == ["sms"]
    assert len(api.get("/api/tasks/?status=failed").json()["results"]) == 5
    assert len(api.get("/api/tasks/?correlation_id=c0").json()["results"]) == 3
    assert len(api.get(f"/api/tasks/?contact={contact.id}").json()["results"]) == 1
    assert len(api.get("/api/tasks/?type=sms.send").json()["results"]) == 1
    first = api.get("/api/tasks/?page_size=4").json()
    second = api.get(first["next"]).json()
    ids = [t["id"] for t in first["results"] + second["results"]]
    assert len(ids) == len(set(ids)) == 6
    assert second["next"] is None


def test_list_rejects_unknown_filter_values(api):
    response = api.get("/api/tasks/?status=bogus")
    assert response.status_code == 400
    assert "status" in response.json()["error"]["fields"]


# --- Authentication ---------------------------------------------------------------------


def test_unauthenticated_is_401_with_json(client):
    response = client.get("/api/tasks/")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"
    assert response["WWW-Authenticate"].startswith("Api-Key")


def test_bearer_is_accepted(client, api_key):
    assert client.get("/api/tasks/", HTTP_AUTHORIZATION=f"Bearer {api_key}").status_code == 200


def test_wrong_and_revoked_keys_are_401(client, api_key):
    assert client.get("/api/tasks/", HTTP_AUTHORIZATION="Api-Key cp_nope").status_code == 401
    ApiKey.objects.update(revoked_at=timezone.now())
    response = client.get("/api/tasks/", HTTP_AUTHORIZATION=f"Api-Key {api_key}")
    assert response.status_code == 401
    assert "revoked" in response.json()["error"]["message"]


def test_only_the_digest_of_a_key_is_stored(api_key):
    row = ApiKey.objects.get()
    assert api_key not in (row.digest, row.prefix)
    assert len(row.digest) == 64


# --- Bad input --------------------------------------------------------------------------


def test_malformed_json_is_400(api):
    response = post(api, "{not json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_json"


def test_body_must_be_an_object(api):
    response = post(api, "[1, 2]")
    assert response.status_code == 400
    assert "JSON object" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": 5}, "type"),
        ({"type": "diagnostic.echo", "payload": "text"}, "payload"),
        ({"type": "diagnostic.echo", "priority": "high"}, "priority"),
        ({"type": "diagnostic.echo", "priority": 12}, "priority"),
        ({"type": "diagnostic.echo", "scheduled_for": "tomorrow"}, "scheduled_for"),
        ({"type": "diagnostic.echo", "contact": "not-a-uuid"}, "contact"),
        ({"type": "diagnostic.echo", "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
        ({"type": "diagnostic.echo", "colour": "red"}, "colour"),
        ({}, "type"),
    ],
)
def test_wrong_types_name_the_field(api, body, field):
    response = post(api, body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert field in error["fields"]


def test_unknown_type_lists_known_types(api):
    # sms.send is seeded by the messaging agent's migration; make sure it exists either way.
    AgentRegistration.objects.get_or_create(task_type="sms.send", defaults={"agent": "messaging", "channel": "sms",
                                            "queue": "messaging", "handler": "agents.common.diagnostic.echo"})  # fmt: skip
    response = post(api, {"type": "fax.send"})
    assert response.status_code == 400
    message = response.json()["error"]["fields"]["type"][0]
    assert "fax.send" in message
    assert "diagnostic.echo" in message and "sms.send" in message


def test_disabled_type_is_unknown(api):
    AgentRegistration.objects.filter(task_type="diagnostic.echo").update(enabled=False)
    assert post(api, {"type": "diagnostic.echo"}).status_code == 400


def test_unknown_contact_is_400(api):
    missing = uuid.uuid4()
    response = post(api, {"type": "diagnostic.echo", "contact": str(missing)})
    assert response.status_code == 400
    assert str(missing) in response.json()["error"]["fields"]["contact"][0]


@override_settings(API_MAX_BODY_BYTES=1000)
def test_oversize_body_is_413(api):
    response = post(api, {"type": "diagnostic.echo", "payload": {"blob": "x" * 2000}})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert not Task.objects.exists()


@override_settings(TASK_PAYLOAD_MAX_BYTES=100)
def test_oversize_payload_is_400(api):
    response = post(api, {"type": "diagnostic.echo", "payload": {"blob": "x" * 200}})
    assert response.status_code == 400
    assert "limit is 100" in response.json()["error"]["fields"]["payload"][0]


def test_unknown_api_path_is_json_404(api):
    response = api.get("/api/nothing-here/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_unknown_task_is_json_404(api):
    response = api.get(f"/api/tasks/{uuid.uuid4()}/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


# --- Idempotency ------------------------------------------------------------------------


def test_same_key_same_body_returns_the_first_task(api):
    body = {"type": "diagnostic.echo", "payload": {"n": 1}}
    first = post(api, body, HTTP_IDEMPOTENCY_KEY="order-42")
    again = post(api, body, HTTP_IDEMPOTENCY_KEY="order-42")
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    assert Task.objects.count() == 1


def test_same_key_other_body_is_409(api):
    post(api, {"type": "diagnostic.echo", "payload": {"n": 1}}, HTTP_IDEMPOTENCY_KEY="order-43")
    response = post(api, {"type": "diagnostic.echo", "payload": {"n": 2}}, HTTP_IDEMPOTENCY_KEY="order-43")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "idempotency_conflict"
    assert Task.objects.count() == 1


def test_keys_are_per_client(api, client):
    from orchestrator.api.auth import api_key_create

    other = api_key_create(name="other")[1]
    body = {"type": "diagnostic.echo"}
    a = post(api, body, HTTP_IDEMPOTENCY_KEY="k")
    b = post(client, body, HTTP_IDEMPOTENCY_KEY="k", HTTP_AUTHORIZATION=f"Api-Key {other}")
    assert (a.status_code, b.status_code) == (201, 201)
    assert a.json()["id"] != b.json()["id"]


# --- The intake INSERT (services.insert_row) -------------------------------------------


def _created(**overrides):
    from datetime import timedelta

    from orchestrator import services

    parent = Task.objects.create(type="diagnostic.echo", channel="system")
    contact = Contact.objects.create(name="Ada", phone="+14155550101")
    now = timezone.now()
    fields = {"type": "diagnostic.echo", "contact_id": contact.id, "correlation_id": "corr-1", "priority": 8,
              "payload": {"text": "héllo 👋", "n": 3, "ratio": 0.25, "ok": True, "none": None,
                          "nested": {"list": [1, "two", {"three": []}]}, "quote": "it's \"quoted\""},
              "scheduled_for": now + timedelta(hours=1), "expires_at": now + timedelta(days=1),
              "source": "key:7", "idempotency_key": "order-77", "digest": "d" * 64,
              "parent_id": parent.id, **overrides}  # fmt: skip
    before = timezone.now()
    task, created = services.task_create(**fields)
    return task, created, fields, before


def test_task_create_stores_every_field_as_the_orm_reads_it(django_assert_num_queries):
    task, created, fields, before = _created()
    assert created
    stored = Task.objects.get(id=task.id)
    for field in Task._meta.concrete_fields:
        assert getattr(stored, field.attname) == getattr(task, field.attname), field.name
    assert stored.payload == fields["payload"]
    assert (stored.scheduled_for, stored.expires_at) == (fields["scheduled_for"], fields["expires_at"])
    assert (stored.idempotency_key, stored.request_digest, stored.source) == ("order-77", "d" * 64, "key:7")
    assert (stored.contact_id, stored.parent_id) == (fields["contact_id"], fields["parent_id"])
    assert (stored.status, stored.channel, stored.priority, stored.attempts) == (S.PENDING, "system", 8, 0)
    assert before <= stored.created_at <= timezone.now()
    assert before <= stored.updated_at <= timezone.now()
    # The JSON is stored as JSON (an object the database can query), not as a quoted string.
    assert Task.objects.filter(id=task.id, payload__nested__list__1="two").exists()
    # The instance knows it is saved: a later save() updates the row instead of inserting it.
    assert (task._state.adding, task._state.db) == (False, "default")
    task.priority = 2
    with django_assert_num_queries(1):
        task.save(update_fields=["priority"])
    assert Task.objects.get(id=task.id).priority == 2


def test_task_create_stores_what_an_orm_insert_would():
    from orchestrator import services

    task, _, fields, _ = _created(payload={}, scheduled_for=None, expires_at=None, idempotency_key=None,
                                  contact_id=None, parent_id=None)  # fmt: skip
    twin = Task(type=fields["type"], channel="system", correlation_id=fields["correlation_id"],
                priority=fields["priority"], source=fields["source"], request_digest=fields["digest"])  # fmt: skip
    twin.save(force_insert=True)
    mine, orm = Task.objects.get(id=task.id), Task.objects.get(id=twin.id)
    differing = {"id", "created_at", "updated_at"}
    for field in Task._meta.concrete_fields:
        if field.name not in differing:
            assert getattr(mine, field.attname) == getattr(orm, field.attname), field.name
    assert mine.idempotency_key is None  # NULL, not "": keyless tasks stay out of the unique constraint
    assert Task.objects.filter(id=task.id, payload={}).exists()
    assert services.task_create(type="diagnostic.echo", source=fields["source"])[1]  # another keyless one


def test_duplicate_key_racing_past_the_lookup_returns_the_first_task(monkeypatch):
    """Two requests with one key both find nothing, both INSERT: the unique constraint raises
    IntegrityError (Django's, from the raw INSERT too), the loser returns the winner's task and
    the caller's transaction goes on (the INSERT ran in a savepoint)."""
    from django.db import transaction

    from orchestrator import services
    from orchestrator.services import intake

    first, _, fields, _ = _created()
    lookup = intake._existing_for_key
    calls = []

    def late_lookup(source, key, digest):
        calls.append(key)
        return None if len(calls) == 1 else lookup(source, key, digest)  # the first look misses the row

    monkeypatch.setattr(intake, "_existing_for_key", late_lookup)
    assert transaction.get_connection().in_atomic_block  # the test's transaction: the savepoint path
    again, created = services.task_create(**fields)
    assert (again.id, created) == (first.id, False)
    assert len(calls) == 2
    assert Task.objects.filter(idempotency_key="order-77").count() == 1  # the transaction still works


# --- Agent callbacks and cancellation ---------------------------------------------------


@pytest.fixture
def dispatched_task(far_agent):
    return Task.objects.create(type="remote.echo", channel="system", status=S.DISPATCHED, agent="far")


def patch(client, task, body, key):
    return client.patch(f"/api/tasks/{task.id}/", data=json.dumps(body), content_type="application/json",
                        HTTP_AUTHORIZATION=f"Api-Key {key}")  # fmt: skip


def test_agent_patch_moves_the_task(client, agent_key, dispatched_task):
    response = patch(client, dispatched_task, {"status": "in_progress", "provider_id": "SM123"}, agent_key)
    assert response.status_code == 200
    assert response.json()["applied"] is True
    dispatched_task.refresh_from_db()
    assert (dispatched_task.status, dispatched_task.provider_id) == (S.IN_PROGRESS, "SM123")
    assert TaskEvent.objects.get(task=dispatched_task).actor == "api:test-agent"


def test_client_key_may_not_patch(client, api_key, dispatched_task):
    assert patch(client, dispatched_task, {"status": "succeeded"}, api_key).status_code == 403


def test_illegal_patch_is_409(client, agent_key, dispatched_task):
    patch(client, dispatched_task, {"status": "succeeded"}, agent_key)
    response = patch(client, dispatched_task, {"status": "failed"}, agent_key)
    assert response.status_code == 409
    dispatched_task.refresh_from_db()
    assert dispatched_task.status == S.SUCCEEDED


def test_late_patch_is_recorded_not_applied(client, agent_key, dispatched_task):
    patch(client, dispatched_task, {"status": "succeeded"}, agent_key)
    response = patch(client, dispatched_task, {"status": "in_progress"}, agent_key)
    assert response.status_code == 200
    assert response.json()["applied"] is False
    assert response.json()["status"] == S.SUCCEEDED


def test_patch_status_outside_agent_choices_is_400(client, agent_key, dispatched_task):
    response = patch(client, dispatched_task, {"status": "pending"}, agent_key)
    assert response.status_code == 400
    assert "status" in response.json()["error"]["fields"]


def test_cancel(api):
    task = Task.objects.create(type="diagnostic.echo", channel="system", status=S.QUEUED)
    response = api.post(f"/api/tasks/{task.id}/cancel/", data=json.dumps({"reason": "customer asked"}),
                        content_type="application/json")  # fmt: skip
    assert response.status_code == 200
    assert response.json()["status"] == S.CANCELLED
    again = api.post(f"/api/tasks/{task.id}/cancel/")
    assert again.status_code == 409


def test_type_specific_payload_validator_gives_a_400(api):
    from rest_framework import serializers

    from orchestrator import registry

    @registry.payload_validator("diagnostic.echo")
    def needs_text(payload, contact):
        if "text" not in payload:
            raise serializers.ValidationError({"payload": ["text is required for diagnostic.echo."]})
        return {**payload, "text": payload["text"].strip()}

    try:
        bad = post(api, {"type": "diagnostic.echo", "payload": {}})
        assert bad.status_code == 400
        assert bad.json()["error"]["fields"]["payload"] == ["text is required for diagnostic.echo."]
        good = post(api, {"type": "diagnostic.echo", "payload": {"text": "  hi  "}})
        assert good.status_code == 201
        assert good.json()["payload"] == {"text": "hi"}
    finally:
        registry._payload_validators.pop("diagnostic.echo", None)


def test_intake_response_matches_the_task_serializer(api):
    from rest_framework.utils.encoders import JSONEncoder

    from orchestrator.api.serializers import TaskSerializer, task_as_dict

    contact = Contact.objects.create(name="Ada")
    body = post(api, {"type": "diagnostic.echo", "contact": str(contact.id), "payload": {"a": [1, 2]},
                      "scheduled_for": "2030-01-01T10:00:00+02:00"}).json()  # fmt: skip
    task = Task.objects.get(id=body["id"])
    expected = json.loads(json.dumps(TaskSerializer(task).data, cls=JSONEncoder))
    assert json.loads(json.dumps(task_as_dict(task))) == expected
    assert body == expected


def test_nul_characters_are_refused_not_a_500(api):
    response = post(api, '{"type": "diagnostic.echo", "payload": {"text": "a\\u0000b"}}')
    assert response.status_code == 400
    assert "NUL" in response.json()["error"]["message"]
    assert api.get("/api/tasks/?correlation_id=a%00b").status_code == 400


def test_far_offsets_in_date_filters_are_compared_in_utc(api):
    assert api.get("/api/tasks/?created_after=0212-04-16T13:38:31-22:24").status_code == 200
