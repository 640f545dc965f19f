"""Invalid API keys are throttled per client address (API_INVALID_KEY_LIMIT, e.g. "20/m").

Each request with an unknown, revoked or malformed key counts one failure for its address
in a fixed window (a Redis counter shared by every web process, or per process without
Redis). Past the limit the address gets 429 with Retry-After until the window ends, before
any database lookup: guessing keys costs the guesser time, not us a query per guess.
A valid key is never slowed: it is checked only after a failed lookup or a cache miss.
"""

from __future__ import annotations

import logging
import threading
import time
from functools import lru_cache

from django.conf import settings

log = logging.getLogger(__name__)
_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_limit(value: str) -> tuple[int, int] | None:
    """``"20/m"`` → (20 failures, 60 s window); ``""``, ``"0"`` or ``"off"`` → None."""
    value = (value or "").strip().lower()
    if value in ("", "0", "off"):
        return None
    count, _, period = value.partition("/")
    seconds = _PERIODS.get(period.strip()[:1] or "m")
    if seconds is None or int(count) <= 0:
        raise ValueError(f"API_INVALID_KEY_LIMIT: {value!r} is not count/period (s, m, h, d)")
    return int(count), seconds


class _Memory:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[float, int]] = {}

    def incr(self, key: str, window: int) -> None:
        now = time.monotonic()
        with self._lock:
            start, count = self._windows.get(key, (now, 0))
            if now - start >= window:
                start, count = now, 0
            self._windows[key] = (start, count + 1)

    def blocked_for(self, key: str, limit: int, window: int) -> int:
        with self._lock:
            start, count = self._windows.get(key, (0.0, 0))
        left = window - (time.monotonic() - start)
        return max(1, int(left) + 1) if count >= limit and left > 0 else 0

    def reset(self) -> None:
        with self._lock:
            self._windows.clear()


_memory = _Memory()


@lru_cache(maxsize=4)
def _redis(url: str):
    import redis

    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


def _key(address: str) -> str:
    return f"apikey-failures:{address}"


def record_failure(address: str) -> None:
    parsed = parse_limit(settings.API_INVALID_KEY_LIMIT)
    if parsed is None:
        return
    window = parsed[1]
    if not settings.REDIS_URL:
        _memory.incr(_key(address), window)
        return
    try:
        pipe = _redis(settings.REDIS_URL).pipeline()
        pipe.incr(_key(address))
        pipe.expire(_key(address), window, nx=True)
        pipe.execute()
    except Exception as exc:  # Redis down: the key is refused anyway, only not counted
        log.warning("invalid-key counter unavailable: %s", type(exc).__name__)


def blocked_for(address: str) -> int:
    """Seconds this address must wait, or 0."""
    parsed = parse_limit(settings.API_INVALID_KEY_LIMIT)
    if parsed is None:
        return 0
    limit, window = parsed
    if not settings.REDIS_URL:
        return _memory.blocked_for(_key(address), limit, window)
    try:
        client = _redis(settings.REDIS_URL)
        count = int(client.get(_key(address)) or 0)
        if count < limit:
            return 0
        return max(1, int(client.ttl(_key(address))))
    except Exception as exc:  # fail open, as the request throttle does
        log.warning("invalid-key counter unavailable: %s", type(exc).__name__)
        return 0


def reset() -> None:
    """Forget the in-process counters (tests)."""
    _memory.reset()
