"""Intake validation of email.send: a bad payload is a 400 that says what is wrong."""

from __future__ import annotations

import json

import pytest

from agents.email.services import render_body
from dossiers.models import Contact
from dossiers.services import artifact_store

pytestmark = pytest.mark.django_db


def post(api, body):
    return api.post("/api/tasks/", data=json.dumps(body), content_type="application/json")


def test_missing_subject_body_and_recipient_are_named(api):
    response = post(api, {"type": "email.send", "payload": {"to": "not-an-address"}})

    assert response.status_code == 400
    messages = response.json()["error"]["fields"]["payload"]
    assert "'subject' is required (a non-empty string)." in messages
    assert "'to' is not an email address." in messages
    assert "give the body: 'text', 'html', 'template' or 'artifact'." in messages


def test_unknown_template_and_artifact_are_named(api):
    response = post(api, {"type": "email.send", "payload": {
        "to": "a@example.org", "subject": "x", "template": "nope",
        "attachments": ["3f1c2a52-54a4-4a36-8f57-2b6c1d8f0a11", "junk"]}})  # fmt: skip

    messages = response.json()["error"]["fields"]["payload"]
    assert "no email template 'email/nope.html'." in messages
    assert "'junk' is not an artifact id." in messages


def test_contact_email_is_the_default_recipient(api, django_capture_on_commit_callbacks):
    ada = Contact.objects.create(name="Ada", email="ada@example.org")
    with django_capture_on_commit_callbacks(execute=False):
        response = post(
            api, {"type": "email.send", "contact": str(ada.id), "payload": {"subject": "Hi", "text": "x"}}
        )
    assert response.status_code == 201, response.content


def test_generated_artifact_as_body_or_as_link(settings):
    html = artifact_store(content=b"<html><body><h1>Report</h1><p>All good.</p></body></html>",
                          content_type="text/html; charset=utf-8", kind="html")  # fmt: skip
    body = render_body(payload={"subject": "Report", "artifact": str(html.id)}, contact=None)
    assert body.html.startswith("<html>")
    assert body.text == "Report\nAll good."

    linked = render_body(payload={"subject": "Report", "text": "Your report:", "artifact": str(html.id),
                                  "artifact_as": "link"}, contact=None)  # fmt: skip
    assert linked.text.startswith(f"Your report:\n\n{settings.PUBLIC_BASE_URL}/a/")
    assert 'href="http://127.0.0.1:8000/a/' in linked.html

    text = artifact_store(content=b"Summary line.", content_type="text/plain", kind="text")
    plain = render_body(payload={"subject": "S", "text": "Hello", "artifact": str(text.id)}, contact=None)
    assert plain.text == "Hello\n\nSummary line."


def test_artifact_text_for_message_bodies():
    from agents.content.text import artifact_text

    html = artifact_store(content=b"<h1>Update</h1><p>Parcel left the depot.</p>", content_type="text/html",
                          kind="html")  # fmt: skip
    assert artifact_text(artifact_id=html.id) == "Update\nParcel left the depot."
