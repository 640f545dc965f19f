"""Signed, expiring URLs for artifacts: ``/a/<token>/``.

The token is the artifact id signed with a timestamp (``TimestampSigner``, SECRET_KEY, a
salt of its own), so it cannot be forged or edited, and it is refused once older than
ARTIFACT_URL_TTL_SECONDS. A refused token answers 404 exactly like an unknown one: the
URL does not tell whether the artifact exists.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core import signing
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpRequest
from django.utils import timezone
from django.views.decorators.http import require_GET

from dossiers.models import Artifact

SALT = "artifact-url"


def _signer() -> signing.TimestampSigner:
    # "." is outside the token's alphabet and needs no escaping in a URL path.
    return signing.TimestampSigner(salt=SALT, sep=".")


def artifact_token(*, artifact_id: Any) -> str:
    return _signer().sign(str(artifact_id))


def artifact_url(*, artifact_id: Any) -> str:
    """An absolute URL valid for ARTIFACT_URL_TTL_SECONDS from now."""
    return f"{settings.PUBLIC_BASE_URL}/a/{artifact_token(artifact_id=artifact_id)}/"


def artifact_url_expires_at() -> datetime:
    return timezone.now() + timedelta(seconds=settings.ARTIFACT_URL_TTL_SECONDS)


def artifact_from_token(*, token: str) -> Artifact | None:
    """The artifact the token names, or None when it is tampered, expired or unknown."""
    try:
        value = _signer().unsign(token, max_age=settings.ARTIFACT_URL_TTL_SECONDS)
        return Artifact.objects.filter(id=uuid.UUID(value)).first()
    except (signing.BadSignature, ValueError):  # SignatureExpired is a BadSignature
        return None


@require_GET
def serve_artifact(request: HttpRequest, token: str) -> FileResponse:
    artifact = artifact_from_token(token=token)
    if artifact is None or not default_storage.exists(artifact.storage_key):
        raise Http404("No such document.")
    response = FileResponse(
        default_storage.open(artifact.storage_key, "rb"), content_type=artifact.content_type
    )
    # Generated HTML is served from our own origin: the sandbox stops any script in it
    # from running with our cookies; nosniff keeps browsers from guessing another type.
    response["Content-Security-Policy"] = (
        "sandbox; default-src 'none'; img-src https: data:; style-src 'unsafe-inline'"
    )
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private, no-store"
    response["Referrer-Policy"] = "no-referrer"
    return response
