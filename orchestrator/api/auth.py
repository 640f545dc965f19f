"""API-key authentication: ``Authorization: Api-Key <key>`` (``Bearer <key>`` also works).

Keys are 32 random bytes, so one SHA-256 digest and an indexed lookup identify a key;
no password hasher is needed (or wanted) on every request.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from rest_framework import authentication, exceptions

from orchestrator.models import ApiKey, ApiKeyRole

KEY_PREFIX = "cp_"
LAST_USED_RESOLUTION = timedelta(minutes=1)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def api_key_create(*, name: str, role: str = ApiKeyRole.CLIENT) -> tuple[ApiKey, str]:
    """Create a key and return it with its plain text, which is not stored anywhere."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    api_key = ApiKey.objects.create(name=name, prefix=key[:10], digest=digest(key), role=role)
    return api_key, key


@dataclass(frozen=True)
class ApiClient:
    """The request.user of an API-key request."""

    key_id: int
    name: str
    role: str
    is_authenticated: bool = True
    is_active: bool = True
    is_staff: bool = False
    is_superuser: bool = False

    @property
    def source(self) -> str:
        return f"key:{self.key_id}"

    @property
    def is_agent(self) -> bool:
        return self.role == ApiKeyRole.AGENT

    def __str__(self) -> str:
        return f"api-key:{self.name}"


class _KeyCache:
    """Recently verified keys, per process, for API_KEY_CACHE_SECONDS.

    Saves a database round trip on every request. A revoked key stops working in this
    process at once (the admin clears it) and in the others within the cache lifetime.
    """

    def __init__(self, size: int = 1024) -> None:
        self._items: dict[str, tuple[float, ApiClient]] = {}
        self._size = size

    def get(self, key_digest: str) -> ApiClient | None:
        item = self._items.get(key_digest)
        if item is None or item[0] < time.monotonic():
            return None
        return item[1]

    def put(self, key_digest: str, client: ApiClient) -> None:
        if len(self._items) >= self._size:
            self._items.clear()
        self._items[key_digest] = (time.monotonic() + settings.API_KEY_CACHE_SECONDS, client)

    def clear(self) -> None:
        self._items.clear()


key_cache = _KeyCache()


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keywords = ("api-key", "bearer")

    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        keyword, _, key = header.partition(" ")
        if keyword.lower() not in self.keywords:
            return None
        key = key.strip()
        if not key:
            raise exceptions.AuthenticationFailed("The Authorization header names no key.")
        key_digest = digest(key)
        client = key_cache.get(key_digest)
        if client is not None:
            return client, None
        row = (
            ApiKey.objects.filter(digest=key_digest, revoked_at__isnull=True)
            .only("id", "name", "role", "last_used_at")
            .first()
        )
        if row is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
        now = timezone.now()
        if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
            ApiKey.objects.filter(id=row.id).update(last_used_at=now)
        client = ApiClient(key_id=row.id, name=row.name, role=row.role)
        if settings.API_KEY_CACHE_SECONDS > 0:
            key_cache.put(key_digest, client)
        return client, row

    def authenticate_header(self, request) -> str:
        return 'Api-Key realm="api"'


class StaffSessionAuthentication(authentication.SessionAuthentication):
    """The console's browser session, for staff only: any other logged-in user needs a key.

    Plain SessionAuthentication would let every Django user (not only operators) read and
    create tasks through the API.
    """

    def authenticate(self, request):
        result = super().authenticate(request)
        if result is None or not result[0].is_staff:
            return None
        return result
