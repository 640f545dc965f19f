"""Signing secrets: generated here, kept encrypted at rest (Fernet, keyed from SECRET_KEY).

The platform must know the plain secret to sign (HMAC-SHA256), so it cannot keep a hash;
the database holds only the Fernet token. Changing SECRET_KEY makes stored secrets
unreadable: rotate every endpoint's secret afterwards (docs/webhooks.md).
"""

from __future__ import annotations

import base64
import hashlib
import secrets

from cryptography.fernet import Fernet
from django.conf import settings

PREFIX = "whsec_"


def generate() -> str:
    """A Standard Webhooks secret: ``whsec_`` and 32 random bytes in base64."""
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _fernet() -> Fernet:
    key = hashlib.sha256(b"event_webhooks.secrets:" + settings.SECRET_KEY.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(key))


def encrypt(secret: str) -> str:
    return _fernet().encrypt(secret.encode()).decode()


def decrypt(token: str) -> str:
    return _fernet().decrypt(token.encode()).decode()
