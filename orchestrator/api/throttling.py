"""Per-API-key request throttling (API_THROTTLE_RATE, e.g. "50/s").

One token bucket per key, taken from ``comms_platform.ratelimit``: with REDIS_URL the bucket
lives in Redis and is shared by every web process. A quiet key costs one Redis round trip
per request (one EVALSHA of the bucket script); a busy key's tokens are leased to each
process in small chunks (at most a tenth of a second's worth, ``acquire_leased``), so
under load most requests cost no round trip at all while the limit still holds across
processes. Without Redis each process keeps its own buckets in memory. The bucket holds one period's
worth of requests, so "50/s" allows bursts of 50 and 50 requests a second sustained.

A refused request gets 429 ``{"error": {"code": "throttled", ...}}`` and ``Retry-After``
(DRF's ``Throttled`` exception, shaped by ``orchestrator.api.errors``). If Redis cannot be
reached the request is let through: throttling protects capacity, it must not take the API
down with it.
"""

from __future__ import annotations

import logging
import math

from django.conf import settings
from rest_framework.throttling import BaseThrottle

from comms_platform import ratelimit

log = logging.getLogger(__name__)

_PERIODS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600,
            "d": 86400, "day": 86400}  # fmt: skip


def parse_rate(rate: str) -> tuple[float, float] | None:
    """``"50/s"`` → (tokens per second, burst); empty, ``"0"`` or ``"off"`` → None (no limit)."""
    rate = (rate or "").strip().lower()
    if rate in ("", "0", "off", "none"):
        return None
    count, _, period = rate.partition("/")
    seconds = _PERIODS.get(period.strip() or "s")
    if seconds is None:
        raise ValueError(f"API_THROTTLE_RATE: unknown period {period!r} (use s, m, h or d)")
    num = float(count)
    if num <= 0:
        return None
    return num / seconds, num


class ApiKeyRateThrottle(BaseThrottle):
    """Throttles each API key (or, for session users, each user; else each client address)."""

    def __init__(self) -> None:
        self._wait: float | None = None

    def _ident(self, request) -> str:
        user = getattr(request, "user", None)
        key_id = getattr(user, "key_id", None)
        if key_id is not None:
            return f"key:{key_id}"
        if user is not None and getattr(user, "is_authenticated", False) and getattr(user, "pk", None):
            return f"user:{user.pk}"
        return f"addr:{self.get_ident(request)}"

    def allow_request(self, request, view) -> bool:
        parsed = parse_rate(settings.API_THROTTLE_RATE)
        if parsed is None:
            return True
        rate, burst = parsed
        try:
            wait = ratelimit.acquire_leased(f"api:{self._ident(request)}", rate=rate, burst=burst)
        except Exception as exc:  # Redis unreachable: fail open, say so
            log.warning("API throttle unavailable, request let through: %s", type(exc).__name__)
            return True
        if wait <= 0:
            return True
        self._wait = wait
        return False

    def wait(self) -> float | None:
        # Retry-After is whole seconds; never tell a client to retry at once when refused.
        return max(1, math.ceil(self._wait)) if self._wait is not None else None
