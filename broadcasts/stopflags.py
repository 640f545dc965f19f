"""The stop flag of a broadcast: raised by pause / cancel, read by a sending batch before each
provider call. A Redis key costs one round trip (~0.2 ms); without Redis (the embedded
default) the batch reads the broadcast's status from the database instead.

A back-off (the provider answered 429 / 5xx) is a second key that expires by itself when the
back-off ends: the batch that met the refusal raises it at once, so the broadcast's other
batches in flight stop at their next call too (read in the same round trip)."""

from __future__ import annotations

import functools
import logging
from typing import Any

from django.conf import settings

log = logging.getLogger(__name__)
TTL_SECONDS = 7 * 24 * 3600


def _key(broadcast_id: Any) -> str:
    return f"broadcast:{broadcast_id}:stop"


def _backoff_key(broadcast_id: Any) -> str:
    return f"broadcast:{broadcast_id}:backoff"


@functools.lru_cache(maxsize=4)
def _client(url: str):
    import redis

    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


def raise_flag(broadcast_id: Any) -> None:
    if settings.REDIS_URL:
        _client(settings.REDIS_URL).set(_key(broadcast_id), "1", ex=TTL_SECONDS)


def lower_flag(broadcast_id: Any) -> None:
    if settings.REDIS_URL:
        _client(settings.REDIS_URL).delete(_key(broadcast_id))


def hold(broadcast_id: Any, seconds: float) -> None:
    """Stop the broadcast's batches for ``seconds`` (a back-off). Redis only, no database: it is
    called from a sending thread; without Redis the batch's writer records the back-off."""
    if settings.REDIS_URL and seconds > 0:
        _client(settings.REDIS_URL).set(_backoff_key(broadcast_id), "1", px=max(1, int(seconds * 1000)))


def backoff_left(broadcast_id: Any) -> float:
    """Seconds the back-off key still holds (0 without one, or without Redis)."""
    if not settings.REDIS_URL:
        return 0.0
    try:
        millis = _client(settings.REDIS_URL).pttl(_backoff_key(broadcast_id))
    except Exception as exc:  # the database's backoff_until still holds
        log.warning("back-off flag unreadable (%s)", type(exc).__name__)
        return 0.0
    return max(0.0, millis / 1000.0)


def is_raised(broadcast_id: Any) -> bool:
    """True when the batch must stop (paused, cancelled, backing off). Falls back to the
    database when Redis is not configured or does not answer (a stop must never be missed
    because Redis blinked)."""
    if settings.REDIS_URL:
        try:
            return bool(_client(settings.REDIS_URL).exists(_key(broadcast_id), _backoff_key(broadcast_id)))
        except Exception as exc:  # any Redis failure: ask the database
            log.warning("stop flag unreadable (%s): reading the broadcast's status", type(exc).__name__)
    from django.utils import timezone

    from broadcasts.models import Broadcast, BroadcastStatus

    row = Broadcast.objects.filter(id=broadcast_id).values_list("status", "backoff_until").first()
    if row is None or row[0] != BroadcastStatus.RUNNING:
        return True
    return row[1] is not None and row[1] > timezone.now()
