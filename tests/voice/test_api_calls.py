"""POST /api/calls/ and the call.outbound intake validator of POST /api/tasks/."""

from __future__ import annotations

import pytest

from dossiers.models import Call, Contact
from dossiers.services import consent_set
from orchestrator.models import Task

pytestmark = pytest.mark.django_db


def post(api, body, **headers):
    return api.post("/api/calls/", body, content_type="application/json", **headers)


def test_a_number_creates_a_call_task_and_its_call_row(api):
    response = post(api, {"to": "(415) 555-0123", "goal": "confirm the delivery", "greeting": "Hi!",
                          "persona": "You are Ada.", "language": "en-GB", "voice": "Polly.Amy",
                          "max_duration_seconds": 120, "record": True, "machine_detection": "Enable",
                          "correlation_id": "order-77"} | {"to": "+14155550123"})  # fmt: skip
    assert response.status_code == 201, response.content
    body = response.json()
    task = Task.objects.get(id=body["id"])
    assert (task.type, task.channel, task.correlation_id) == ("call.outbound", "voice", "order-77")
    assert task.payload == {"to": "+14155550123", "goal": "confirm the delivery", "greeting": "Hi!",
                            "persona": "You are Ada.", "language": "en-GB", "voice": "Polly.Amy",
                            "max_duration_seconds": 120, "record": True, "machine_detection": "Enable"}  # fmt: skip
    call = Call.objects.get(task=task)
    assert (call.to_address, call.direction, call.status, call.correlation_id) == (
        "+14155550123", "outbound", "queued", "order-77")  # fmt: skip
    assert body["call"]["id"] == call.id


def test_a_contact_is_called_on_its_phone_with_defaults(api, settings):
    contact = Contact.objects.create(name="Grace", phone="+442071838750", locale="en-GB")
    response = post(api, {"contact": str(contact.id), "goal": "book a visit"})
    assert response.status_code == 201, response.content
    task = Task.objects.get(id=response.json()["id"])
    assert task.contact_id == contact.id
    assert task.payload["to"] == "+442071838750"
    assert task.payload["language"] == "en-GB"
    assert task.payload["voice"] == settings.VOICE_DEFAULT_VOICE
    assert task.payload["max_duration_seconds"] == settings.VOICE_MAX_DURATION_SECONDS


@pytest.mark.parametrize(("body", "field"), [
    ({"to": "12", "goal": "x"}, "to"),
    ({"to": "not a number", "goal": "x"}, "to"),
    ({"goal": "x"}, "to"),
    ({"to": "+14155550123"}, "goal"),
    ({"to": "+14155550123", "goal": "x", "machine_detection": "Sometimes"}, "machine_detection"),
    ({"to": "+14155550123", "goal": "x", "max_duration_seconds": 1}, "max_duration_seconds"),
    ({"to": "+14155550123", "goal": "x", "language": "english please"}, "language"),
    ({"to": "+14155550123", "goal": "x", "colour": "blue"}, "colour"),
    ({"contact": "6f1c3a3e-0000-4000-8000-000000000000", "goal": "x"}, "contact"),
])  # fmt: skip
def test_bad_input_is_a_400_that_names_the_field(api, body, field):
    response = post(api, body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert field in error["fields"]
    assert not Task.objects.exists() and not Call.objects.exists()


def test_an_opted_out_contact_is_refused(api):
    contact = Contact.objects.create(name="Ann", phone="+14155550199")
    consent_set(contact_id=contact.id, channel="voice", status="opted_out", source="api")
    response = post(api, {"contact": str(contact.id), "goal": "x"})
    assert response.status_code == 400
    assert "opted out" in response.json()["error"]["fields"]["contact"][0]


def test_idempotency_key_returns_the_first_call(api):
    body = {"to": "+14155550123", "goal": "confirm"}
    first = post(api, body, HTTP_IDEMPOTENCY_KEY="k-1")
    again = post(api, body, HTTP_IDEMPOTENCY_KEY="k-1")
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    assert Call.objects.count() == 1
    assert post(api, {**body, "goal": "other"}, HTTP_IDEMPOTENCY_KEY="k-1").status_code == 409


def test_needs_an_api_key(client):
    assert client.post("/api/calls/", {}, content_type="application/json").status_code in (401, 403)


def test_generic_task_intake_validates_the_call_payload(api):
    bad = api.post("/api/tasks/", {"type": "call.outbound", "payload": {"to": "nope", "goal": "x"}},
                   content_type="application/json")  # fmt: skip
    assert bad.status_code == 400
    assert "to" in bad.json()["error"]["fields"]["payload"]
    good = api.post("/api/tasks/", {"type": "call.outbound", "payload": {"to": "+14155550123", "goal": "x"}},
                    content_type="application/json")  # fmt: skip
    assert good.status_code == 201
    assert good.json()["payload"]["to"] == "+14155550123"
