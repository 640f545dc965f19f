"""The one way an artifact leaves the platform: a signed, expiring URL ``/a/<token>/``.

Every link — the API's ``GET /api/artifacts/<id>/``, the console's previews and recordings,
content results, email links, inbound media — is made here and served by ``serve_artifact``.

The token is the artifact id signed with a timestamp (``TimestampSigner``, SECRET_KEY, a
salt of its own): it cannot be forged or edited and is refused once older than
ARTIFACT_URL_TTL_SECONDS. A refused token answers 404 exactly like an unknown one.

Blobs are customer-supplied (MMS media, LLM output, recordings) and served from our own
origin, so every answer is sandboxed (``Content-Security-Policy: sandbox``), never sniffed,
never cached, and only a short list of passive types is shown inline: anything else —
HTML and SVG above all — is an attachment.
"""

from __future__ import annotations

import mimetypes
import re
import uuid
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core import signing
from django.core.files.storage import default_storage
from django.http import FileResponse, HttpRequest, HttpResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_GET

from dossiers.models import Artifact

SALT = "dossiers.artifact-url"
# Passive types a browser renders without running anything: shown inline. Everything else
# (text/html, image/svg+xml, XML, PDF, unknown types) is downloaded as an attachment.
INLINE_TYPES = frozenset(
    {"text/plain", "application/json", "image/png", "image/jpeg", "image/gif", "image/webp"}
)
INLINE_PREFIXES = ("audio/", "video/")
CSP = "sandbox; default-src 'none'; img-src data:; media-src 'self'; style-src 'unsafe-inline'"
_MIME = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*$")


def _signer() -> signing.TimestampSigner:
    # "." is outside the token's alphabet and needs no escaping in a URL path.
    return signing.TimestampSigner(salt=SALT, sep=".")


def artifact_token(*, artifact_id: Any) -> str:
    return _signer().sign(str(artifact_id))


def artifact_path(*, artifact_id: Any) -> str:
    """A site-relative URL valid for ARTIFACT_URL_TTL_SECONDS (the console's pages)."""
    return reverse("artifact", args=[artifact_token(artifact_id=artifact_id)])


def artifact_url(*, artifact_id: Any) -> str:
    """An absolute URL under PUBLIC_BASE_URL valid for ARTIFACT_URL_TTL_SECONDS."""
    return settings.PUBLIC_BASE_URL + artifact_path(artifact_id=artifact_id)


def artifact_url_expires_at() -> datetime:
    return timezone.now() + timedelta(seconds=settings.ARTIFACT_URL_TTL_SECONDS)


def artifact_from_token(*, token: str) -> Artifact | None:
    """The artifact the token names, or None when it is tampered, expired or unknown."""
    try:
        value = _signer().unsign(token, max_age=settings.ARTIFACT_URL_TTL_SECONDS)
        return Artifact.objects.filter(id=uuid.UUID(value)).first()
    except (signing.BadSignature, ValueError):  # SignatureExpired is a BadSignature
        return None


def artifact_available(artifact: Artifact) -> bool:
    """Whether the blob is there to serve (a recording is a reference until downloaded)."""
    if artifact.kind == "recording" and not artifact.sha256:
        return False
    try:
        return default_storage.exists(artifact.storage_key)
    except OSError:  # storage unreachable: as unavailable as a missing file
        return False


def unavailable_reason(artifact: Artifact) -> str:
    if artifact.kind == "recording" and not artifact.sha256:
        return "The recording has not been downloaded from the provider yet."
    return "The file of this artifact is no longer in storage (deleted or expired)."


def served_type(content_type: str) -> str:
    """The stored type when it is a well-formed ``type/subtype``, else octet-stream."""
    base = (content_type or "").split(";")[0].strip().lower()
    if _MIME.match(base) and not any(c in content_type for c in "\r\n\x00"):
        return content_type.strip()
    return "application/octet-stream"


def is_inline(content_type: str) -> bool:
    base = content_type.split(";")[0].strip().lower()
    return base in INLINE_TYPES or base.startswith(INLINE_PREFIXES)


def filename(artifact: Artifact, content_type: str) -> str:
    ext = mimetypes.guess_extension(content_type.split(";")[0].strip()) or ".bin"
    return f"{artifact.kind or 'artifact'}-{str(artifact.id)[:8]}{ext}"


def unavailable_response(message: str) -> HttpResponse:
    response = HttpResponse(message, status=404, content_type="text/plain; charset=utf-8")
    _protect(response)
    return response


def _protect(response: HttpResponse) -> None:
    response["Content-Security-Policy"] = CSP
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private, no-store"
    response["Referrer-Policy"] = "no-referrer"
    response["Cross-Origin-Resource-Policy"] = "same-origin"


@require_GET
def serve_artifact(request: HttpRequest, token: str) -> HttpResponse:
    artifact = artifact_from_token(token=token)
    if artifact is None:
        return unavailable_response("This link is invalid or has expired.")
    if not artifact_available(artifact):
        return unavailable_response(f"This document is unavailable. {unavailable_reason(artifact)}")
    try:
        blob = default_storage.open(artifact.storage_key, "rb")
    except OSError:
        return unavailable_response(f"This document is unavailable. {unavailable_reason(artifact)}")
    content_type = served_type(artifact.content_type)
    response = FileResponse(blob, content_type=content_type)
    response["Content-Disposition"] = content_disposition_header(
        not is_inline(content_type), filename(artifact, content_type)
    )
    _protect(response)
    return response
