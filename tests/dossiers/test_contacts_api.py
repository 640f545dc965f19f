"""Contacts: phone parsing, dedupe by phone and email, search, avatars, consent, export."""

from __future__ import annotations

import pytest

from dossiers.models import AuditLog, ConsentChange, Contact
from dossiers.services import InvalidPhoneNumber, contact_get_or_create, normalize_phone
from tests.dossiers.factories import alice, message

pytestmark = pytest.mark.django_db

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("+1 415-555-0134", None, "+14155550134"),
        ("(415) 555-0134", "US", "+14155550134"),
        ("020 7183 8750", "GB", "+442071838750"),
        ("+44 20 7183 8750", "US", "+442071838750"),
        ("whatsapp:+442071838750", None, "+442071838750"),
        ("0033 1 42 68 53 00", "GB", "+33142685300"),
    ],
)
def test_normalize_phone_national_and_international(raw, region, expected):
    assert normalize_phone(raw, region=region) == expected


@pytest.mark.parametrize("raw", ["", "hello", "+1 415", "020 7183 8750", "+999 1234567"])
def test_normalize_phone_refuses_what_is_not_a_number(raw):
    with pytest.raises(InvalidPhoneNumber):
        normalize_phone(raw)  # no region: a national number cannot be read


def test_post_creates_a_contact_with_e164_phone_and_whatsapp(api):
    response = api.post("/api/contacts/", {"name": "Alice Martin", "phone": "(415) 555-0134"},
                        content_type="application/json")  # fmt: skip
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["phone"] == "+14155550134"
    assert body["whatsapp"] == "whatsapp:+14155550134"
    assert body["consents"] == {
        "sms": "unknown",
        "whatsapp": "unknown",
        "voice": "unknown",
        "email": "unknown",
    }
    assert body["timeline_url"] == f"/api/contacts/{body['id']}/timeline/"


def test_post_with_region_reads_a_national_number(api):
    response = api.post("/api/contacts/", {"phone": "020 7183 8750", "region": "GB"},
                        content_type="application/json")  # fmt: skip
    assert response.status_code == 201
    assert response.json()["phone"] == "+442071838750"


def test_invalid_phone_is_a_400_that_says_so(api):
    response = api.post("/api/contacts/", {"phone": "12"}, content_type="application/json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert "phone" in error["fields"]
    assert "not a" in error["message"] and "phone number" in error["message"]
    assert Contact.objects.count() == 0


def test_contact_needs_a_phone_or_an_email(api):
    response = api.post("/api/contacts/", {"name": "Nobody"}, content_type="application/json")
    assert response.status_code == 400
    assert "phone number or an email" in response.json()["error"]["message"]


def test_unknown_time_zone_and_unknown_field_are_refused(api):
    r1 = api.post("/api/contacts/", {"email": "a@example.com", "timezone": "Mars/Base"},
                  content_type="application/json")  # fmt: skip
    r2 = api.post(
        "/api/contacts/", {"email": "a@example.com", "nickname": "x"}, content_type="application/json"
    )
    assert r1.status_code == 400 and "IANA" in r1.json()["error"]["message"]
    assert r2.status_code == 400 and "nickname" in r2.json()["error"]["fields"]


def test_creating_an_existing_contact_returns_it(api):
    first = api.post("/api/contacts/", {"phone": "+14155550134", "email": "Alice@Example.com"},
                     content_type="application/json")  # fmt: skip
    by_phone = api.post("/api/contacts/", {"phone": "(415) 555-0134"}, content_type="application/json")
    by_email = api.post("/api/contacts/", {"email": "ALICE@example.COM"}, content_type="application/json")
    assert first.status_code == 201
    assert by_phone.status_code == 200 and by_email.status_code == 200
    assert first.json()["id"] == by_phone.json()["id"] == by_email.json()["id"]
    assert first.json()["email"] == "alice@example.com"
    assert Contact.objects.count() == 1


def test_database_refuses_duplicate_phone_or_email():
    from django.db import IntegrityError, transaction

    Contact.objects.create(phone="+14155550134", email="alice@example.com")
    for fields in ({"phone": "+14155550134"}, {"email": "ALICE@example.com"}):
        with pytest.raises(IntegrityError), transaction.atomic():
            Contact.objects.create(**fields)
    # Empty values are not identities: many contacts may lack a phone or an email.
    Contact.objects.create(email="x@example.com")
    Contact.objects.create(email="y@example.com")
    Contact.objects.create(phone="+442071838750")
    assert Contact.objects.filter(phone="").count() == 2


def test_service_dedupes_by_either_identity():
    contact, created = contact_get_or_create(phone="+14155550134")
    same, created_same = contact_get_or_create(phone="+14155550134", email="new@example.com")
    by_email, created_by_email = contact_get_or_create(email="ALICE@example.com", phone="")
    other, created_other = contact_get_or_create(email="alice@example.com")
    assert created and not created_same and same.pk == contact.pk
    assert created_by_email and not created_other and other.pk == by_email.pk


def test_list_search_and_detail(api, django_assert_max_num_queries):
    a = alice()
    Contact.objects.create(name="Bob Stone", phone="+442071838750")
    with django_assert_max_num_queries(4):
        response = api.get("/api/contacts/", {"search": "alice"})
    assert [c["id"] for c in response.json()["results"]] == [str(a.id)]
    assert [c["name"] for c in api.get("/api/contacts/", {"search": "2071838"}).json()["results"]] == [
        "Bob Stone"
    ]
    assert len(api.get("/api/contacts/").json()["results"]) == 2
    detail = api.get(f"/api/contacts/{a.id}/")
    assert detail.status_code == 200 and detail.json()["email"] == "alice@example.com"
    assert api.get("/api/contacts/00000000-0000-0000-0000-000000000000/").status_code == 404


def test_contacts_api_needs_a_key(client):
    assert client.get("/api/contacts/").status_code in (401, 403)


def test_initials_avatar_then_uploaded_image(api, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    a = alice()
    svg = api.get(f"/api/contacts/{a.id}/avatar/")
    assert svg.status_code == 200 and svg["Content-Type"] == "image/svg+xml"
    assert b">AM</text>" in svg.content
    bad = _put(api, f"/api/contacts/{a.id}/avatar/", b"GIF? no, text")
    assert bad.status_code == 400 and "PNG" in bad.json()["error"]["message"]
    ok = _put(api, f"/api/contacts/{a.id}/avatar/", PNG)
    assert ok.status_code == 200, ok.content
    image = api.get(f"/api/contacts/{a.id}/avatar/")
    assert image["Content-Type"] == "image/png"
    assert b"".join(image.streaming_content) == PNG


def _put(api, url: str, content: bytes):
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart

    upload = SimpleUploadedFile("face.png", content, content_type="image/png")
    return api.put(url, encode_multipart(BOUNDARY, {"file": upload}), content_type=MULTIPART_CONTENT)


def test_consent_change_is_recorded_with_history_and_audited(api):
    a = alice()
    response = api.post(f"/api/contacts/{a.id}/consent/", {"channel": "sms", "status": "opted_out",
                        "detail": "asked by phone"}, content_type="application/json")  # fmt: skip
    assert response.status_code == 200
    assert response.json()["consents"]["sms"] == "opted_out"
    change = ConsentChange.objects.get(contact=a)
    assert (change.status, change.source, change.detail) == ("opted_out", "operator", "asked by phone")
    assert change.actor == "api-key:test-client"
    audit = AuditLog.objects.get(action="consent_change")
    assert audit.object_id == str(a.id) and audit.actor == "api-key:test-client"
    assert audit.details == {"channel": "sms", "status": "opted_out", "changed": True}


def test_export_returns_the_dossier_and_is_audited(api):
    a = alice()
    message(a, 1, body="see you at 5")
    response = api.get(f"/api/contacts/{a.id}/export/")
    assert response.status_code == 200
    body = response.json()
    assert body["contact"]["phone"] == "+14155550134"
    assert [m["body"] for m in body["messages"]] == ["see you at 5"]
    audit = AuditLog.objects.get(action="export")
    assert audit.details["messages"] == 1
    assert "+14155550134" not in str(audit.details) and "see you" not in str(audit.details)


def test_get_or_create_by_phone_with_an_email_taken_by_another_contact():
    from dossiers.services import contact_get_or_create_by_phone

    bob = Contact.objects.create(phone="+442071838750", email="shared@example.com")
    contact, created = contact_get_or_create_by_phone(phone="+14155550134",
                                                      defaults={"email": "shared@example.com", "name": "Al"})  # fmt: skip
    assert created and contact.pk != bob.pk
    assert (contact.phone, contact.email, contact.name) == ("+14155550134", "", "Al")
    again, created_again = contact_get_or_create_by_phone(phone="+14155550134")
    assert again.pk == contact.pk and not created_again
