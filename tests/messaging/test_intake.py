"""Payload validation of sms.send / whatsapp.send at intake: a 400 that says why."""

import pytest

from agents.messaging.models import MessageTemplate
from dossiers.models import Contact

pytestmark = pytest.mark.django_db


def post(api, type_, payload, **extra):
    return api.post(
        "/api/tasks/", {"type": type_, "payload": payload, **extra}, content_type="application/json"
    )


def message_of(response) -> str:
    return str(response.json())


def test_sms_with_a_body_is_accepted_and_reports_encoding_and_segments(api):
    response = post(api, "sms.send", {"to": "+1 415 555 0100", "body": "a" * 161})
    assert response.status_code == 201, response.json()
    assert response.json()["payload"] == {
        "to": "+14155550100",
        "body": "a" * 161,
        "encoding": "GSM-7",
        "segments": 2,
    }


def test_ucs2_body_over_the_segment_limit_is_refused(api, settings):
    settings.SMS_MAX_SEGMENTS = 2
    response = post(api, "sms.send", {"to": "+14155550100", "body": "ç" * 135})
    assert response.status_code == 400
    assert "3 UCS-2 segments" in message_of(response) and "limit is 2" in message_of(response)


def test_whatsapp_body_over_4096_characters_is_refused(api):
    response = post(api, "whatsapp.send", {"to": "+14155550100", "body": "a" * 4097})
    assert response.status_code == 400
    assert "4097 characters" in message_of(response)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"to": "+14155550100"}, "exactly one of body, template or prompt"),
        ({"to": "+14155550100", "body": "hi", "prompt": "say hi"}, "got body, prompt"),
        ({"to": "+14155550100", "body": "hi", "template": "t"}, "got body, template"),
        ({"body": "hi"}, "'to' is required"),
        ({"to": "12", "body": "hi"}, "is not a phone number"),
        ({"to": "+14155550100", "body": "hi", "colour": "red"}, "unknown field(s) colour"),
        ({"to": "+14155550100", "body": "hi", "media_url": ["ftp://x"]}, "media_url"),
        ({"to": "+14155550100", "template": "nope"}, "no sms template named 'nope'"),
    ],
)
def test_bad_payloads_are_400_with_the_reason(api, payload, expected):
    response = post(api, "sms.send", payload)
    assert response.status_code == 400
    assert expected in message_of(response)


def test_template_missing_variable_is_400_not_a_blank(api):
    MessageTemplate.objects.create(name="reminder", locale="en", channel="sms",
                                   body="Hi {{ name }}, see you on {{ date }}.")  # fmt: skip
    response = post(
        api, "sms.send", {"to": "+14155550100", "template": "reminder", "variables": {"name": "Ada"}}
    )
    assert response.status_code == 400
    assert "missing template variable(s): date" in message_of(response)


def test_template_uses_contact_fields_and_locale_fallback(api):
    contact = Contact.objects.create(name="Ada Lovelace", phone="+14155550100", locale="fr-CA")
    MessageTemplate.objects.create(
        name="reminder", locale="fr", channel="sms", body="Bonjour {{ first_name }} {{ date }}"
    )
    response = post(
        api, "sms.send", {"template": "reminder", "variables": {"date": "lundi"}}, contact=str(contact.id)
    )
    assert response.status_code == 201, response.json()
    assert response.json()["payload"]["to"] == "+14155550100"
    assert response.json()["payload"]["segments"] == 1


def test_prompt_is_accepted_and_written_at_send_time(api):
    response = post(api, "sms.send", {"to": "+14155550100", "prompt": "remind them of the meeting"})
    assert response.status_code == 201
