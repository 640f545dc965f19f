"""Small HTML pieces shared by the console's admin columns and pages."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

from dashboard import adapters

_SVG = '<svg viewBox="0 0 24 24" width="16" height="16" aria-hidden="true" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round">{}</svg>'
_ICON_PATHS = {
    "voice": '<path d="M22 16.9v3a2 2 0 0 1-2.2 2 19.8 19.8 0 0 1-8.6-3.1 19.5 19.5 0 0 1-6-6A19.8 19.8 0 0 1 2.1 4.2 2 2 0 0 1 4.1 2h3a2 2 0 0 1 2 1.7c.1.9.4 1.8.7 2.7a2 2 0 0 1-.5 2.1L8 9.8a16 16 0 0 0 6 6l1.3-1.3a2 2 0 0 1 2.1-.4c.9.3 1.8.6 2.7.7a2 2 0 0 1 1.7 2z"/>',
    "sms": '<path d="M21 15a2 2 0 0 1-2 2H7l-4 4V5a2 2 0 0 1 2-2h14a2 2 0 0 1 2 2z"/>',
    "whatsapp": '<path d="M3 21l1.7-5A8.5 8.5 0 1 1 8 19.3z"/><path d="M9 10c.5 2 2 3.5 4 4"/>',
    "email": '<rect x="2" y="4" width="20" height="16" rx="2"/><path d="m22 7-10 6L2 7"/>',
    "content": '<path d="M14 2H6a2 2 0 0 0-2 2v16a2 2 0 0 0 2 2h12a2 2 0 0 0 2-2V8z"/><path d="M14 2v6h6M8 13h8M8 17h5"/>',
    "any": '<circle cx="12" cy="12" r="3"/><path d="M12 2v4M12 18v4M2 12h4M18 12h4"/>',
    "system": '<circle cx="12" cy="12" r="9"/><path d="M12 7v5l3 3"/>',
}
CHANNEL_LABELS = {"voice": "Voice", "sms": "SMS", "whatsapp": "WhatsApp", "email": "Email", "content": "Content",
                  "any": "Routed", "system": "System"}  # fmt: skip
STATUS_TONES = {
    "pending": "idle", "routed": "idle", "queued": "idle",
    "dispatched": "busy", "in_progress": "busy",
    "succeeded": "good", "failed": "bad", "expired": "warn", "cancelled": "warn",
}  # fmt: skip
_AVATAR_HUES = (210, 260, 330, 20, 140, 180, 45, 290)
_ANON = mark_safe(
    '<svg viewBox="0 0 24 24" width="60%" height="60%" aria-hidden="true" fill="currentColor">'
    '<circle cx="12" cy="8" r="4"/><path d="M4 21c0-4.4 3.6-7 8-7s8 2.6 8 7z"/></svg>'
)


def channel_icon(channel: str, *, label: bool = False) -> SafeString:
    svg = mark_safe(_SVG.format(_ICON_PATHS.get(channel, _ICON_PATHS["system"])))  # noqa: S308 (constant SVG)
    name = CHANNEL_LABELS.get(channel, channel)
    text = format_html('<span class="cc-chan-label">{}</span>', name) if label else ""
    return format_html('<span class="cc-chan cc-chan-{}" title="{}">{}{}</span>', channel, name, svg, text)


def status_badge(status: str) -> SafeString:
    tone = STATUS_TONES.get(status, "idle")
    return format_html('<span class="cc-badge cc-{}">{}</span>', tone, status.replace("_", " "))


def initials(name: str) -> str:
    parts = [p for p in name.replace("+", " ").split() if p[:1].isalnum()]
    if not parts:
        return "?"
    letters = parts[0][0] + (parts[-1][0] if len(parts) > 1 else "")
    return letters.upper()


def avatar(contact: Any, *, size: int = 28) -> SafeString:
    """The contact's picture when there is one, else initials on a colour chosen by the id."""
    if contact is None:
        return format_html('<span class="cc-avatar cc-avatar-none" style="--s:{}px">–</span>', size)
    url = adapters.contact_avatar_url(contact)
    if url:
        return format_html('<img class="cc-avatar" style="--s:{}px" src="{}" alt="">', size, url)
    if not any(ch.isalpha() for ch in getattr(contact, "name", "") or ""):
        # Known only by a number (or an address): a neutral silhouette, not the digit "1".
        return format_html('<span class="cc-avatar cc-avatar-anon" style="--s:{}px" title="no name yet">{}</span>',
                           size, _ANON)  # fmt: skip
    hue = _AVATAR_HUES[int(hashlib.md5(str(contact.pk).encode(), usedforsecurity=False).hexdigest(), 16) % 8]
    return format_html(
        '<span class="cc-avatar" style="--s:{}px;--h:{}" aria-hidden="true">{}</span>',
        size,
        hue,
        initials(str(contact)),
    )


def contact_chip(contact: Any) -> SafeString:
    if contact is None:
        return format_html('<span class="cc-muted">no contact</span>')
    return format_html('<span class="cc-contact">{}<span>{}</span></span>', avatar(contact), str(contact))


def age(at: datetime | None, *, now: datetime | None = None) -> str:
    """Compact age for busy lists: 45s, 12m, 3h, 2d."""
    if at is None:
        return ""
    seconds = int(((now or timezone.now()) - at).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def detail_items(details: Any) -> list[tuple[str, str]]:
    """A task event's details as readable ``(name, value)`` pairs (nested values as JSON)."""
    if not isinstance(details, dict):
        return [("details", str(details))] if details else []
    items = []
    for key, value in details.items():
        if isinstance(value, (dict, list)):
            import json

            value = json.dumps(value, ensure_ascii=False, default=str)
        items.append((str(key).replace("_", " "), "—" if value in (None, "") else str(value)))
    return items
