"""Signed, expiring artifact URLs (/a/<token>/) and content.generate in test mode (the
headers per type: tests/security/test_artifact_view.py)."""

from __future__ import annotations

import json
import time

import pytest
from django.core import signing

from agents.content.links import artifact_token, artifact_url
from dossiers.services import artifact_store

pytestmark = pytest.mark.django_db


@pytest.fixture
def doc():
    return artifact_store(content=b"<!doctype html><p>Secret plan</p>", content_type="text/html; charset=utf-8",
                          kind="html")  # fmt: skip


def test_valid_token_serves_the_file_sandboxed(client, doc):
    response = client.get(f"/a/{artifact_token(artifact_id=doc.id)}/")

    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"<!doctype html><p>Secret plan</p>"
    assert response["Content-Type"] == "text/html; charset=utf-8"
    assert response["Content-Disposition"].startswith("attachment;")  # HTML is never inline
    assert response["Content-Security-Policy"].startswith("sandbox")
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "no-store" in response["Cache-Control"]


def test_url_is_absolute_under_the_public_base(doc, settings):
    settings.PUBLIC_BASE_URL = "https://comms.example.com"
    assert artifact_url(artifact_id=doc.id).startswith("https://comms.example.com/a/")


def test_tampered_token_is_404(client, doc):
    token = artifact_token(artifact_id=doc.id)
    value, ts, sig = token.split(".")
    other = artifact_store(content=b"other", content_type="text/plain", kind="text")
    for bad in (f"{other.id}.{ts}.{sig}", f"{value}.{ts}.{sig[:-2]}xx", f"{value}.{int(time.time()) + 99}.{sig}",
                str(doc.id), "garbage"):  # fmt: skip
        response = client.get(f"/a/{bad}/")
        assert response.status_code == 404, bad
        assert b"Secret plan" not in response.content


def test_expired_token_is_404(client, doc, settings, monkeypatch):
    settings.ARTIFACT_URL_TTL_SECONDS = 60
    issued = time.time() - 61
    monkeypatch.setattr(signing.time, "time", lambda: issued)
    token = artifact_token(artifact_id=doc.id)
    monkeypatch.undo()

    assert client.get(f"/a/{token}/").status_code == 404
    settings.ARTIFACT_URL_TTL_SECONDS = 120
    assert client.get(f"/a/{token}/").status_code == 200


def test_deleted_artifact_is_404(client, doc):
    token = artifact_token(artifact_id=doc.id)
    doc.delete()
    assert client.get(f"/a/{token}/").status_code == 404


def test_content_generate_in_test_mode_is_deterministic_and_served(
    api, settings, django_capture_on_commit_callbacks
):
    def create():
        with django_capture_on_commit_callbacks(execute=True):
            response = api.post("/api/tasks/", content_type="application/json", data=json.dumps(
                {"type": "content.generate", "payload": {"prompt": "Explain the new plan", "format": "html",
                                                         "title": "Plan"}}))  # fmt: skip
        assert response.status_code == 201, response.content
        return api.get(f"/api/tasks/{response.json()['id']}/").json()

    first, second = create(), create()
    assert first["status"] == "succeeded"
    path = first["result"]["url"].removeprefix(settings.PUBLIC_BASE_URL)
    page = b"".join(api.get(path).streaming_content).decode()
    assert "<h1>Plan</h1>" in page and "Explain the new plan" in page
    second_page = b"".join(
        api.get(second["result"]["url"].removeprefix(settings.PUBLIC_BASE_URL)).streaming_content
    )
    assert second_page.decode() == page


def test_content_payload_is_validated(api):
    response = api.post("/api/tasks/", content_type="application/json",
                        data=json.dumps({"type": "content.generate", "payload": {"format": "pdf", "max_tokens": 0}}))  # fmt: skip
    assert response.status_code == 400
    assert response.json()["error"]["fields"]["payload"] == [
        "'prompt' is required (a non-empty string).",
        "'format' must be one of summary, html.",
        "'max_tokens' must be an integer from 1 to 4000.",
    ]
