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

from comms_platform.clientip import client_ip
from orchestrator.api import badkeys
from orchestrator.models import ALL_TYPES, ApiKey, ApiKeyRole, ContactAccess

KEY_PREFIX = "cp_"
LAST_USED_RESOLUTION = timedelta(minutes=1)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


# Called with each new key; each returns {label: value} to show once with it (the outbound
# webhooks' callback signing secret). Apps register in AppConfig.ready (the orchestrator
# imports none of them).
KEY_CREATED_HOOKS: list = []


def register_key_created_hook(hook) -> None:
    if hook not in KEY_CREATED_HOOKS:
        KEY_CREATED_HOOKS.append(hook)


def api_key_create(
    *,
    name: str,
    role: str = ApiKeyRole.CLIENT,
    task_types: list[str] | None = None,
    contacts: str = ContactAccess.NONE,
    all_tasks: bool = False,
    agent_registration=None,
    expires_at=None,
    webhooks: bool = False,
) -> tuple[ApiKey, str]:
    """Create a key and return it with its plain text, which is not stored anywhere.

    A client key may create every type open to clients unless ``task_types`` narrows it,
    sees only its own tasks and no contacts unless granted. An agent key creates nothing and
    must name its remote agent's registration (``ApiKey.clean`` says why when it does not).
    """
    if task_types is None:
        task_types = [ALL_TYPES] if role == ApiKeyRole.CLIENT else []
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    api_key = ApiKey(name=name, prefix=key[:10], digest=digest(key), role=role, task_types=task_types,
                     contacts=contacts, all_tasks=all_tasks, agent_registration=agent_registration,
                     expires_at=expires_at, webhooks=webhooks)  # fmt: skip
    api_key.clean()
    api_key.save()
    # What to show once alongside the key (``create_api_key`` prints it): {label: value}.
    api_key.shown_once = {}
    for hook in KEY_CREATED_HOOKS:
        api_key.shown_once.update(hook(api_key) or {})
    return api_key, key


@dataclass(frozen=True)
class ApiClient:
    """The request.user of an API-key request."""

    key_id: int
    name: str
    role: str
    task_types: tuple[str, ...] = ()
    contacts: str = ContactAccess.NONE
    all_tasks: bool = False
    agent: str = ""  # agent keys: the agent name of the bound registration
    webhooks: bool = False  # may manage its outbound webhook endpoints
    expires_at: object = None
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

    def may_create(self, task_type: str) -> bool:
        return not self.is_agent and (ALL_TYPES in self.task_types or task_type in self.task_types)

    def may_contacts(self, level: str) -> bool:
        """``read`` or ``write``: a write grant includes reading."""
        if level == ContactAccess.READ:
            return self.contacts in (ContactAccess.READ, ContactAccess.WRITE)
        return self.contacts == ContactAccess.WRITE

    def expired(self, now=None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or timezone.now())

    def has_perm(self, perm: str) -> bool:
        return False  # a key holds scopes, never a person's permissions

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
            if client.expired():
                raise exceptions.AuthenticationFailed("This API key has expired.", code="key_expired")
            return client, None
        # Guessing keys costs a lookup each: an address that keeps failing is refused first.
        address = client_ip(request)
        wait = badkeys.blocked_for(address)
        if wait:
            raise exceptions.Throttled(wait=wait, detail="Too many requests with invalid API keys.")
        row = (
            ApiKey.objects.filter(digest=key_digest, revoked_at__isnull=True)
            .select_related("agent_registration")
            .first()
        )
        if row is None:
            badkeys.record_failure(address)
            raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
        now = timezone.now()
        client = _client_of(row)
        if client.expired(now):
            raise exceptions.AuthenticationFailed("This API key has expired.", code="key_expired")
        if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
            ApiKey.objects.filter(id=row.id).update(last_used_at=now)
        if settings.API_KEY_CACHE_SECONDS > 0:
            key_cache.put(key_digest, client)
        return client, row

    def authenticate_header(self, request) -> str:
        return 'Api-Key realm="api"'


def _client_of(row: ApiKey) -> ApiClient:
    reg = row.agent_registration
    return ApiClient(key_id=row.id, name=row.name, role=row.role, task_types=tuple(row.task_types or ()),
                     contacts=row.contacts, all_tasks=row.all_tasks, agent=reg.agent if reg and reg.kind == "remote" else "",
                     expires_at=row.expires_at, webhooks=row.webhooks)  # fmt: skip


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
