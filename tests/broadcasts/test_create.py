"""Creating a broadcast: bulk accept, per-recipient validation with line and reason, dedupe,
idempotent retries, and the API's error shapes."""

from __future__ import annotations

import pytest

from broadcasts.errors import BroadcastError, IdempotencyConflict
from broadcasts.models import Broadcast, Recipient
from broadcasts.services import broadcast_create, broadcast_preview

pytestmark = pytest.mark.django_db


def _people(n: int, start: int = 100) -> list[dict]:
    return [{"to": f"+1415555{start + i:04d}", "variables": {"name": f"P{i}"}} for i in range(n)]


def test_bulk_accept_dedupes_and_reports_bad_rows_with_their_line():
    recipients = [
        *_people(3),
        {"to": "not a number", "variables": {"name": "X"}},
        {"to": "+14155550101", "variables": {"name": "dup of line 2"}},
        {"to": "+14155550200", "variables": {}},  # the body needs {{ name }}
        {"variables": {"name": "no to"}},
    ]
    result = broadcast_create(
        name="launch", channel="sms", body="Hi {{ name }}", recipients=recipients, start=False
    )
    assert result.created
    rows = list(
        Recipient.objects.filter(broadcast=result.broadcast).order_by("line").values_list("line", "address")
    )
    assert rows == [(1, "+14155550100"), (2, "+14155550101"), (3, "+14155550102")]
    rejected = {r["line"]: r["reason"] for r in result.rejected}
    assert set(rejected) == {4, 5, 6, 7}
    assert "not a phone number" in rejected[4]
    assert rejected[5] == "duplicate"
    assert "missing variable(s): name" in rejected[6]
    assert "'to' is missing" in rejected[7]
    assert (result.broadcast.total, result.broadcast.rejected) == (3, 4)


def test_no_valid_recipient_creates_nothing():
    with pytest.raises(BroadcastError) as err:
        broadcast_create(name="x", channel="sms", body="hi", recipients=[{"to": "nope"}], start=False)
    assert err.value.field == "recipients"
    assert not Broadcast.objects.exists() and not Recipient.objects.exists()


def test_a_retried_request_creates_nothing_twice_and_another_body_conflicts():
    args = dict(name="retry", channel="sms", body="Hi {{ name }}", recipients=_people(50), start=False,
                idempotency_key="k-1", source="client:a")  # fmt: skip
    first = broadcast_create(**args)
    again = broadcast_create(**args)
    assert first.created and not again.created
    assert again.broadcast.id == first.broadcast.id
    assert Broadcast.objects.count() == 1 and Recipient.objects.count() == 50
    with pytest.raises(IdempotencyConflict):
        broadcast_create(**{**args, "body": "Other {{ name }}"})
    # Another client may use the same key.
    other = broadcast_create(**{**args, "source": "client:b"})
    assert other.created and Broadcast.objects.count() == 2


def test_preview_renders_the_first_few_and_writes_nothing():
    shown = broadcast_preview(
        channel="sms", body="Hi {{ name }}", recipients=[*_people(2), {"to": "x"}, *_people(5, 300)], limit=3
    )
    assert [s.get("body") for s in shown[:2]] == ["Hi P0", "Hi P1"]
    assert shown[2]["line"] == 3 and "not a phone number" in shown[2]["error"]
    assert len(shown) == 3
    assert not Broadcast.objects.exists()


def test_an_email_broadcast_without_a_subject_is_refused_by_name():
    with pytest.raises(BroadcastError) as err:
        broadcast_create(
            name="x", channel="email", body="hi", recipients=[{"to": "a@example.org"}], start=False
        )
    assert err.value.field == "subject"
    with pytest.raises(BroadcastError) as err:
        broadcast_create(name="x", channel="pigeon", body="hi", recipients=_people(1), start=False)
    assert err.value.field == "channel"


# --- the API ------------------------------------------------------------------------------------


def test_api_creates_and_answers_the_retry_with_the_same_broadcast(api):
    body = {
        "name": "api",
        "channel": "sms",
        "body": "Hi {{ name }}",
        "recipients": [*_people(4), {"to": "bad"}],
    }
    first = api.post("/api/broadcasts/", body, content_type="application/json", HTTP_IDEMPOTENCY_KEY="abc")
    assert first.status_code == 201, first.content
    data = first.json()
    assert data["progress"]["accepted"] == 4 and data["rejected"] == [
        {"line": 5, "address": "bad", "reason": data["rejected"][0]["reason"]}
    ]
    again = api.post("/api/broadcasts/", body, content_type="application/json", HTTP_IDEMPOTENCY_KEY="abc")
    assert again.status_code == 200 and again.json()["id"] == data["id"]
    other = api.post("/api/broadcasts/", {**body, "body": "Yo {{ name }}"}, content_type="application/json",
                     HTTP_IDEMPOTENCY_KEY="abc")  # fmt: skip
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_conflict"
    assert Recipient.objects.count() == 4


def test_api_a_long_list_is_accepted_at_once_and_imported_by_the_task(
    api, settings, django_capture_on_commit_callbacks
):
    """Past BROADCAST_INLINE_INTAKE_MAX the 201 comes before the rows are inserted: status
    importing, accepted and rejected final; the import task inserts them, and a retry of the
    request creates nothing twice."""
    settings.BROADCAST_INLINE_INTAKE_MAX = 3
    body = {"name": "long", "channel": "sms", "body": "Hi {{ name }}",
            "recipients": [*_people(5), {"to": "bad"}, _people(1)[0]]}  # fmt: skip
    with django_capture_on_commit_callbacks() as queued:
        first = api.post(
            "/api/broadcasts/", body, content_type="application/json", HTTP_IDEMPOTENCY_KEY="long"
        )
    assert first.status_code == 201, first.content
    data = first.json()
    assert data["status"] == "importing"
    assert (data["progress"]["accepted"], data["progress"]["total"], data["progress"]["percent"]) == (
        5,
        0,
        0.0,
    )
    assert [(r["line"], r["reason"]) for r in data["rejected"]][1] == (7, "duplicate")
    assert Recipient.objects.count() == 0 and len(queued) == 1
    queued[0]()  # the import task
    shown = api.get(f"/api/broadcasts/{data['id']}/").json()
    assert (
        shown["status"] == "running"
        and shown["progress"]["total"] == 5
        and shown["progress"]["rejected"] == 2
    )
    again = api.post("/api/broadcasts/", body, content_type="application/json", HTTP_IDEMPOTENCY_KEY="long")
    assert again.status_code == 200 and again.json()["id"] == data["id"]
    assert Recipient.objects.count() == 5


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"channel": "sms", "body": "x", "recipients": _people(1)}, "name"),
        ({"name": "n", "channel": "fax", "body": "x", "recipients": _people(1)}, "channel"),
        ({"name": "n", "channel": "sms", "recipients": _people(1)}, "body"),
        ({"name": "n", "channel": "sms", "body": "x"}, "recipients"),
        ({"name": "n", "channel": "sms", "body": "x", "recipients": [{"to": "nope"}]}, "recipients"),
        (
            {"name": "n", "channel": "sms", "body": "x", "recipients": _people(1), "rate_per_second": -1},
            "rate_per_second",
        ),
        (
            {"name": "n", "channel": "sms", "body": "x", "recipients": _people(1), "quiet_start": "21:00"},
            "quiet_end",
        ),
    ],
)
def test_api_bad_input_is_a_400_naming_the_field(api, body, field):
    response = api.post("/api/broadcasts/", body, content_type="application/json")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid" and field in error["fields"]


def test_api_malformed_json_and_unknown_ids(api):
    response = api.post("/api/broadcasts/", "{nope", content_type="application/json")
    assert response.status_code == 400 and response.json()["error"]["code"] == "malformed_json"
    missing = api.get("/api/broadcasts/00000000-0000-0000-0000-000000000000/")
    assert missing.status_code == 404 and "error" in missing.json()


def test_api_needs_a_key_and_hides_other_clients_broadcasts(client, api):
    from orchestrator.api.auth import api_key_create

    created = api.post("/api/broadcasts/", {"name": "mine", "channel": "sms", "body": "x", "recipients": _people(1)},
                       content_type="application/json").json()  # fmt: skip
    assert client.get(f"/api/broadcasts/{created['id']}/", HTTP_AUTHORIZATION="").status_code in (401, 403)
    other = api_key_create(name="other-client")[1]
    seen = client.get(f"/api/broadcasts/{created['id']}/", HTTP_AUTHORIZATION=f"Api-Key {other}")
    assert seen.status_code == 404
