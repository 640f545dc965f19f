"""Tickets for the console's websockets, which the realtime service serves on another hostname.

The admin's session cookie belongs to the web service's hostname and never reaches the
realtime one (on Render's default ``*.onrender.com`` names one cookie cannot be shared
between two services). So the page asks the web service for a **ticket** just before it
opens a socket (``GET /admin/live/ticket/?path=/ws/inbox/``) and puts it in the socket's
query string. A ticket is:

- **signed** with ``SECRET_KEY`` (Django's ``TimestampSigner``), so nobody can make one;
- **short-lived**: refused ``CONSOLE_WS_TICKET_TTL_SECONDS`` (30) after it was minted;
- **single use**: its random nonce is spent on the first socket (``SET NX`` in Redis, shared by
  every realtime process); a second socket with the same ticket is refused, so a URL copied
  from a log or a proxy cannot be replayed;
- **bound** to the user (id and session-auth hash: a password change voids it), to the socket
  path it was asked for, and to the origin of the page that asked; the socket's ``Origin``
  header must be that origin and one of the trusted page origins (``CSRF_TRUSTED_ORIGINS``,
  ``PUBLIC_BASE_URL``).

When the socket opens, the user is loaded again and must still be active staff holding
``dashboard.use_console``. Anything else is refused before the handshake completes (HTTP 403).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.core import signing
from django.utils.crypto import constant_time_compare

log = logging.getLogger(__name__)

SALT = "dashboard.live-ticket"
PERMISSION = "dashboard.use_console"
NONCE_PREFIX = "console:ws-ticket:"


class TicketRefused(Exception):
    """The socket is refused; the message says why (logged, never shown to the client)."""


def user_may_watch(user: Any) -> bool:
    return bool(
        user and user.is_authenticated and user.is_active and user.is_staff and user.has_perm(PERMISSION)
    )


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower() if parts.scheme and parts.netloc else ""


def trusted_origins() -> set[str]:
    origins = {origin_of(o) for o in settings.CSRF_TRUSTED_ORIGINS}
    origins.add(origin_of(settings.PUBLIC_BASE_URL))
    return origins - {""}


def ticket_mint(*, user: Any, path: str, origin: str) -> str:
    """A ticket for ``user`` to open the socket at ``path`` from a page of ``origin``."""
    payload = {
        "u": str(user.pk),
        "h": user.get_session_auth_hash(),
        "p": path,
        "o": origin.lower(),
        "n": secrets.token_urlsafe(16),
    }
    return signing.dumps(payload, salt=SALT, compress=True)


def ticket_check(*, ticket: str, path: str, origin: str, host: str = "") -> Any:
    """The user a socket at ``path`` with ``Origin: origin`` may be opened for, or TicketRefused."""
    if not ticket:
        raise TicketRefused("no ticket")
    ttl = settings.CONSOLE_WS_TICKET_TTL_SECONDS
    try:
        data = signing.loads(ticket, salt=SALT, max_age=ttl)
    except signing.SignatureExpired as exc:
        raise TicketRefused("ticket expired") from exc
    except signing.BadSignature as exc:
        raise TicketRefused("ticket signature invalid") from exc
    origin = (origin or "").lower()
    if not origin or origin != data.get("o"):
        raise TicketRefused("origin does not match the page the ticket was made for")
    same_host = bool(host) and urlsplit(origin).netloc == host.lower()
    if origin not in trusted_origins() and not same_host:
        raise TicketRefused(f"origin {origin} is not a trusted page origin")
    if data.get("p") != path:
        raise TicketRefused("ticket made for another socket")
    if not _spend(data["n"], ttl):
        raise TicketRefused("ticket already used")
    user = get_user_model().objects.filter(pk=data["u"]).first()
    if user is None or not constant_time_compare(user.get_session_auth_hash(), data.get("h", "")):
        raise TicketRefused("user gone or credentials changed")
    if not user_may_watch(user):
        raise TicketRefused("user may not use the console")
    return user


# --- single use ------------------------------------------------------------------------------
_local_spent: dict[str, float] = {}
_local_lock = threading.Lock()
_client = None


def _spend(nonce: str, ttl: int) -> bool:
    """True the first time ``nonce`` is seen (across processes when Redis is configured)."""
    if settings.REDIS_URL:
        return bool(_redis().set(NONCE_PREFIX + nonce, "1", nx=True, ex=ttl + 5))
    now = time.monotonic()
    with _local_lock:  # the embedded default: one process serves every socket
        for key, expires in list(_local_spent.items()):
            if expires < now:
                del _local_spent[key]
        if nonce in _local_spent:
            return False
        _local_spent[nonce] = now + ttl + 5
        return True


def _redis():
    global _client
    if _client is None:
        import redis

        _client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    return _client


# --- ASGI middleware ---------------------------------------------------------------------------
class TicketAuthMiddleware:
    """Sets ``scope["user"]`` from the ``ticket`` query parameter (AnonymousUser when refused)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket":
            scope = dict(scope)
            scope["user"] = await self._user(scope)
            if not scope["user"].is_authenticated:
                # Every console socket needs a signed-in user: refused here (close 4403, an
                # HTTP 403 before the handshake), before a consumer and its channel-layer
                # subscription exist. A refused socket costs no Redis receive.
                message = await receive()
                if message.get("type") == "websocket.connect":
                    await send({"type": "websocket.close", "code": 4403})
                return None
        return await self.app(scope, receive, send)

    @staticmethod
    async def _user(scope) -> Any:
        headers = {k.decode("latin1").lower(): v.decode("latin1") for k, v in scope.get("headers", [])}
        ticket = parse_qs(scope.get("query_string", b"").decode()).get("ticket", [""])[0]
        try:
            return await database_sync_to_async(ticket_check)(
                ticket=ticket,
                path=scope["path"],
                origin=headers.get("origin", ""),
                host=headers.get("host", ""),
            )
        except TicketRefused as exc:
            log.warning("console websocket refused: %s", exc)
        except Exception:
            log.exception("console websocket refused: ticket check failed")
        return AnonymousUser()
