"""One artifact view (``/a/<token>/``, dossiers/links.py) for every link: the API's, the
console's, content results and inbound media. Customer-supplied files are never run on our
origin: sandboxed, not sniffed, not cached, and only passive types inline."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from django.core.files.storage import default_storage
from django.utils import timezone

from dossiers.models import Artifact, Message
from dossiers.services import artifact_store
from tests.fakes.twilio import FakeTwilio
from tests.messaging.conftest import ACCOUNT, INBOUND_URL, TOKEN, signed_post

pytestmark = pytest.mark.django_db

SCRIPT_HTML = b"<html><body><script>fetch('/admin/').then(r => r.text())</script>hi</body></html>"
SCRIPT_SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(document.cookie)</script></svg>'


def served(api, artifact: Artifact):
    """Follow the link the API hands out, as a client would."""
    detail = api.get(f"/api/artifacts/{artifact.id}/")
    assert detail.status_code == 200, detail.content
    url = detail.json()["url"]
    assert "/a/" in url and detail.json()["url_expires_at"]
    response = api.get(urlsplit(url).path)
    assert response.status_code == 200
    return response


def assert_protected(response) -> None:
    assert response["Content-Security-Policy"].split(";")[0] == "sandbox"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Cache-Control"] == "private, no-store"
    assert response["Referrer-Policy"] == "no-referrer"


@pytest.mark.parametrize(
    ("content", "content_type", "kind", "disposition"),
    [
        (SCRIPT_HTML, "text/html; charset=utf-8", "html", "attachment"),
        (SCRIPT_SVG, "image/svg+xml", "media", "attachment"),
        (b"plain words <script>x</script>", "text/plain", "transcript", "inline"),
        (b"RIFF\x00\x00WAVEfmt ", "audio/wav", "recording", "inline"),
        (b"\x89PNG\r\n\x1a\n", "image/png", "media", "inline"),
        (b"%PDF-1.4", "application/pdf", "document", "attachment"),
        (b"<?xml version='1.0'?><x/>", "application/xml", "document", "attachment"),
        (b"who knows", "text/html\r\nSet-Cookie: a=b", "media", "attachment"),  # a hostile header value
        (b"who knows", "image/png\rX-Evil: 1", "media", "attachment"),
    ],
)
def test_headers_per_type(api, content, content_type, kind, disposition):
    artifact = artifact_store(content=content, content_type=content_type, kind=kind)

    response = served(api, artifact)

    assert_protected(response)
    assert response["Content-Disposition"].split(";")[0] == disposition
    if disposition == "attachment":
        assert f'filename="{kind}-{str(artifact.id)[:8]}' in response["Content-Disposition"]
    assert b"".join(response.streaming_content) == content
    if "\r" in content_type:
        assert response["Content-Type"] == "application/octet-stream"
        assert "Set-Cookie" not in response and "X-Evil" not in response


def test_inbound_media_served_as_html_is_an_attachment_in_a_sandbox(
    client, api, settings, django_capture_on_commit_callbacks
):
    """The attack of issue 16: an MMS whose media is served as text/html by the sender's
    side is stored with that type; its link must not run it on our origin."""
    fake = FakeTwilio(account_sid=ACCOUNT, auth_token=TOKEN).start()
    try:
        settings.PUBLIC_BASE_URL = "https://comms.example.com"
        settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN = ACCOUNT, TOKEN
        settings.TWILIO_PREVIOUS_AUTH_TOKENS = []
        settings.TWILIO_API_BASE_URL = fake.base_url
        settings.MESSAGING_SIMULATED_CALLBACKS = False
        url = fake.add_media("ME1", SCRIPT_HTML, "text/html")
        params = {"MessageSid": "SM" + "1" * 32, "AccountSid": ACCOUNT, "From": "+14155550100",
                  "To": "+15005550006", "Body": "look", "NumMedia": "1", "MediaUrl0": url,
                  "MediaContentType0": "text/html"}  # fmt: skip
        with django_capture_on_commit_callbacks(execute=True):
            assert signed_post(client, INBOUND_URL, params).status_code == 200
    finally:
        fake.stop()
    artifact = Artifact.objects.get(kind="media")
    assert artifact.content_type == "text/html"
    assert Message.objects.get().media[0]["artifact"] == str(artifact.id)

    response = served(api, artifact)

    assert_protected(response)
    assert response["Content-Disposition"].startswith("attachment;")


def test_a_missing_file_is_unavailable_not_a_500(api):
    artifact = artifact_store(content=b"gone soon", content_type="text/plain", kind="transcript")
    url = api.get(f"/api/artifacts/{artifact.id}/").json()["url"]
    default_storage.delete(artifact.storage_key)

    page = api.get(urlsplit(url).path)
    assert page.status_code == 404 and b"unavailable" in page.content
    assert_protected(page)
    detail = api.get(f"/api/artifacts/{artifact.id}/")
    assert detail.status_code == 404
    assert detail.json()["error"]["code"] == "artifact_unavailable"


def test_a_recording_not_yet_downloaded_is_unavailable(api):
    artifact = Artifact.objects.create(kind="recording", storage_key="artifacts/none", content_type="audio/wav",
                                       source_url="https://api.twilio.com/x", occurred_at=timezone.now())  # fmt: skip
    detail = api.get(f"/api/artifacts/{artifact.id}/")
    assert detail.status_code == 404
    assert detail.json()["error"] == {
        "code": "artifact_unavailable",
        "message": "The recording has not been downloaded from the provider yet.",
        "artifact": str(artifact.id),
    }


def test_the_old_unsandboxed_routes_are_gone(client):
    artifact = artifact_store(content=SCRIPT_HTML, content_type="text/html", kind="html")
    assert client.get(f"/artifacts/{artifact.id}/download/?token=x").status_code == 404
    assert client.get(f"/admin/artifacts/{artifact.id}/").status_code in (302, 404)
