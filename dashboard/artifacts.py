"""The console's view of artifacts: links (the platform's one signed, expiring URL from
``dossiers.links``), inline previews and whether the file is there at all."""

from __future__ import annotations

from django.core.files.storage import default_storage

from dossiers import links
from dossiers.models import Artifact

PREVIEW_MAX_BYTES = 200_000


def artifact_url(artifact: Artifact) -> str:
    """A site-relative link valid for ARTIFACT_URL_TTL_SECONDS."""
    return links.artifact_path(artifact_id=artifact.pk)


def artifact_available(artifact: Artifact) -> bool:
    return links.artifact_available(artifact)


def unavailable_reason(artifact: Artifact) -> str:
    return links.unavailable_reason(artifact)


def artifact_text(artifact: Artifact) -> str:
    """The start of a text artifact, for an inline preview."""
    with default_storage.open(artifact.storage_key, "rb") as fh:
        return fh.read(PREVIEW_MAX_BYTES).decode("utf-8", errors="replace")


def preview_kind(artifact: Artifact) -> str:
    ct = artifact.content_type.split(";")[0].strip().lower()
    if ct == "text/html":
        return "html"
    if ct.startswith("text/") or ct in ("application/json",):
        return "text"
    if ct.startswith("audio/"):
        return "audio"
    if ct in links.INLINE_TYPES and ct.startswith("image/"):  # never SVG: it is a document
        return "image"
    return "download"
