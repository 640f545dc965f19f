"""Text out of generated artifacts, for bodies of emails and messages."""

from __future__ import annotations

import re
from typing import Any

from django.core.files.storage import default_storage
from django.utils.html import strip_tags

from dossiers.models import Artifact
from orchestrator.errors import PermanentError

_BLOCK_END = re.compile(r"</(?:p|div|h[1-6]|li|tr|table|blockquote|pre)\s*>|<br\s*/?>", re.IGNORECASE)


def html_to_text(html: str) -> str:
    """A readable text form of HTML: block ends become line breaks, tags go."""
    text = strip_tags(_BLOCK_END.sub("\n", html))
    return "\n".join(line.strip() for line in text.splitlines() if line.strip())


def artifact_read(*, artifact: Artifact) -> bytes:
    with default_storage.open(artifact.storage_key, "rb") as f:
        return f.read()


def artifact_get(*, artifact_id: Any) -> Artifact:
    """The artifact, or a PermanentError: a task naming a deleted artifact cannot succeed."""
    artifact = Artifact.objects.filter(id=artifact_id).first()
    if artifact is None or not default_storage.exists(artifact.storage_key):
        raise PermanentError(f"artifact {artifact_id} no longer exists", code="artifact_missing")
    return artifact


def artifact_text(*, artifact_id: Any) -> str:
    """An artifact as plain text (HTML reduced to its text): for an SMS or WhatsApp body."""
    artifact = artifact_get(artifact_id=artifact_id)
    content = artifact_read(artifact=artifact).decode("utf-8", errors="replace")
    return html_to_text(content) if artifact.content_type.startswith("text/html") else content.strip()
