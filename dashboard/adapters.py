"""The console's guesses about interfaces other branches own, each in one small function.

When the messaging agent, the voice agent or dossiers ship the real thing, only these
functions change (see docs/console.md, "Interfaces the console assumes").
"""

from __future__ import annotations

from typing import Any


def contact_avatar_url(contact: Any) -> str:
    """The contact's picture, or "" (the console then draws an initials avatar).

    Guess: dossiers may add ``Contact.avatar`` (an ImageField/FileField or a URL string).
    """
    avatar = getattr(contact, "avatar", None)
    if not avatar:
        return ""
    return str(getattr(avatar, "url", avatar))
