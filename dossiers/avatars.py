"""Contact avatars: an uploaded image (type sniffed from its first bytes) or initials as SVG."""

from __future__ import annotations

import hashlib
from html import escape

from django.core.files.uploadedfile import UploadedFile

from dossiers.models import Contact

MAX_BYTES = 2 * 1024 * 1024
# Magic numbers: the declared content type of an upload is whatever the client says.
SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": ("image/png", "png"),
    b"\xff\xd8\xff": ("image/jpeg", "jpg"),
    b"GIF87a": ("image/gif", "gif"),
    b"GIF89a": ("image/gif", "gif"),
}
EXTENSIONS = {"png": "image/png", "jpg": "image/jpeg", "gif": "image/gif", "webp": "image/webp"}
PALETTE = ["#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]


class InvalidAvatar(ValueError):
    pass


def sniff(head: bytes) -> tuple[str, str] | None:
    for magic, kind in SIGNATURES.items():
        if head.startswith(magic):
            return kind
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp", "webp"
    return None


def avatar_set(*, contact: Contact, upload: UploadedFile) -> None:
    if upload.size > MAX_BYTES:
        raise InvalidAvatar(f"The image is {upload.size} bytes; the limit is {MAX_BYTES}.")
    head = upload.read(16)
    upload.seek(0)
    kind = sniff(head)
    if kind is None:
        raise InvalidAvatar("Not a PNG, JPEG, GIF or WebP image.")
    old = contact.avatar.name if contact.avatar else ""
    contact.avatar.save(f"{contact.id}.{kind[1]}", upload, save=False)
    contact.save(update_fields=["avatar", "updated_at"])
    if old:
        contact.avatar.storage.delete(old)


def content_type(name: str) -> str:
    return EXTENSIONS.get(name.rsplit(".", 1)[-1].lower(), "application/octet-stream")


def initials(contact: Contact) -> str:
    words = [w for w in contact.name.split() if w[:1].isalpha()]
    if words:
        return (words[0][0] + (words[-1][0] if len(words) > 1 else "")).upper()
    if contact.email:
        return contact.email[0].upper()
    return "#"


def initials_svg(contact: Contact) -> str:
    """A 64x64 circle with the initials; the colour is stable per contact."""
    colour = PALETTE[hashlib.sha256(str(contact.id).encode()).digest()[0] % len(PALETTE)]
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64" viewBox="0 0 64 64">'
        f'<circle cx="32" cy="32" r="32" fill="{colour}"/>'
        '<text x="32" y="32" dy=".35em" text-anchor="middle" font-family="sans-serif" '
        f'font-size="26" fill="#fff">{escape(initials(contact))}</text></svg>'
    )
