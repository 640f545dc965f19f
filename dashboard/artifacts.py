"""Signed, expiring URLs for artifacts, and the staff-only view that serves them."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.core import signing
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpRequest
from django.urls import reverse
from django.views.decorators.clickjacking import xframe_options_sameorigin

from dossiers.models import Artifact

SALT = "dashboard.artifact"
PREVIEW_MAX_BYTES = 200_000


def artifact_url(artifact: Artifact) -> str:
    """A URL for ``artifact`` valid for ARTIFACT_URL_TTL_SECONDS (the console's adapter; a
    dossiers-wide signed URL can replace it without touching the pages)."""
    token = signing.dumps(str(artifact.pk), salt=SALT)
    return reverse("dashboard:artifact", args=[token])


def artifact_text(artifact: Artifact) -> str:
    """The start of a text artifact, for an inline preview."""
    with default_storage.open(artifact.storage_key, "rb") as fh:
        return fh.read(PREVIEW_MAX_BYTES).decode("utf-8", errors="replace")


def preview_kind(artifact: Artifact) -> str:
    ct = artifact.content_type.split(";")[0].strip()
    if ct == "text/html":
        return "html"
    if ct.startswith("text/") or ct in ("application/json",):
        return "text"
    if ct.startswith("audio/"):
        return "audio"
    if ct.startswith("image/"):
        return "image"
    return "download"


@staff_member_required
@xframe_options_sameorigin
def serve_artifact(request: HttpRequest, token: str) -> Any:
    ttl = getattr(settings, "ARTIFACT_URL_TTL_SECONDS", 3600)
    try:
        artifact_id = signing.loads(token, salt=SALT, max_age=ttl)
    except signing.BadSignature as exc:  # includes SignatureExpired
        raise Http404("link expired or invalid") from exc
    artifact = Artifact.objects.filter(pk=artifact_id).first()
    if artifact is None:
        raise Http404("no such artifact")
    response = FileResponse(
        default_storage.open(artifact.storage_key, "rb"), content_type=artifact.content_type
    )
    # Customer-supplied HTML never runs scripts or reaches our origin, even opened on its own.
    response["Content-Security-Policy"] = "sandbox"
    response["X-Content-Type-Options"] = "nosniff"
    return response
