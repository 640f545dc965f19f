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
