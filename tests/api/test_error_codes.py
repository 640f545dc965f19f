"""One code per problem across endpoints: a bad phone number is ``invalid_phone_number`` with
our own message (not the phonenumbers library's), the same on /api/tasks/ and /api/calls/."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


def phone_problem(response) -> dict:
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid"
    (problem,) = [p for p in error["problems"] if p["code"] == "invalid_phone_number"]
    return problem


@pytest.mark.parametrize("bad", ["12", "not a number", "+1 555"])
def test_a_bad_phone_number_is_one_code_and_one_message_on_tasks_and_calls(api, bad):
    sms = api.post("/api/tasks/", {"type": "sms.send", "payload": {"to": bad, "body": "hi"}},
                   content_type="application/json")  # fmt: skip
    call = api.post("/api/calls/", {"to": bad, "goal": "confirm"}, content_type="application/json")
    on_tasks, on_calls = phone_problem(sms), phone_problem(call)
    assert on_tasks["field"] == "payload.to" and on_calls["field"] == "to"
    assert on_tasks["message"] == on_calls["message"]
    assert on_tasks["message"] == (
        f"{bad!r} is not a phone number: write it in international form with the country code, "
        "such as +14155550123."
    )
    # Not the library's own wording ("The string supplied did not seem to be a phone number").
    assert "did not seem" not in on_tasks["message"] and "NumberParseException" not in on_tasks["message"]


def test_other_validation_errors_carry_their_field_and_code(api):
    response = api.post("/api/tasks/", {"type": "sms.send"}, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["problems"]
    response = api.post("/api/calls/", {"to": "+14155550123"}, content_type="application/json")
    problems = response.json()["error"]["problems"]
    assert {"field": "goal", "code": "required", "message": "This field is required."} in problems


def codes_of(response, field: str) -> list[str]:
    assert response.status_code == 400, response.content
    problems = response.json()["error"]["problems"]
    return [p["code"] for p in problems if p["field"] == field or p["field"].startswith(f"{field}.")]


def test_a_bad_phone_number_on_contacts_is_the_same_code(api):
    response = api.post("/api/contacts/", {"name": "X", "phone": "12"}, content_type="application/json")
    assert codes_of(response, "phone") == ["invalid_phone_number"]


def test_a_url_and_an_event_type_have_one_code_each_on_webhook_endpoints_tasks_and_calls(client, settings):
    from orchestrator.api.auth import api_key_create

    key = api_key_create(name="codes", webhooks=True)[1]
    client.defaults["HTTP_AUTHORIZATION"] = f"Api-Key {key}"

    def post(path, body):
        return client.post(path, body, content_type="application/json")

    hooks = "/api/webhook-endpoints/"
    assert codes_of(post(hooks, {"url": "https://example.com/h", "event_types": ["task.exploded"]}),
                    "event_types") == ["unknown_event_type"]  # fmt: skip
    for bad in ("ftp://example.com/h", "not a url"):
        assert codes_of(post(hooks, {"url": bad, "event_types": ["task.failed"]}), "url") == ["invalid_url"]
        assert codes_of(post("/api/tasks/", {"type": "diagnostic.echo", "callback_url": bad}),
                        "callback_url") == ["invalid_url"]  # fmt: skip
        assert codes_of(post("/api/calls/", {"to": "+14155550123", "goal": "g", "callback_url": bad}),
                        "callback_url") == ["invalid_url"]  # fmt: skip
    settings.OUTBOUND_BLOCK_PRIVATE = True
    settings.OUTBOUND_ALLOW_PRIVATE_HOSTS = []
    refused = "http://10.0.0.8/h"
    assert codes_of(post(hooks, {"url": refused, "event_types": ["task.failed"]}), "url") == ["url_refused"]
    assert codes_of(post("/api/tasks/", {"type": "diagnostic.echo", "callback_url": refused}),
                    "callback_url") == ["url_refused"]  # fmt: skip
    # The PATCH of an endpoint says the same.
    settings.OUTBOUND_BLOCK_PRIVATE = False
    created = post(hooks, {"url": "http://127.0.0.1:9/h", "event_types": ["task.failed"]}).json()
    settings.OUTBOUND_BLOCK_PRIVATE = True
    response = client.patch(f"{hooks}{created['id']}/", {"url": refused}, content_type="application/json")
    assert codes_of(response, "url") == ["url_refused"]
