"""Artifact links for generated content: the platform's one signed, expiring URL
(``dossiers.links``), re-exported where the content and email agents look for it."""

from __future__ import annotations

from dossiers.links import artifact_token, artifact_url, artifact_url_expires_at

__all__ = ["artifact_token", "artifact_url", "artifact_url_expires_at"]
