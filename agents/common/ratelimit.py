"""A token bucket per key (e.g. per sender number), shared by every worker through Redis.

``acquire(key, rate=…, burst=…)`` takes one token and returns 0.0, or returns how many
seconds to wait until a token is free (nothing is taken then). Callers that must not block
a worker raise a TransientError with that ``retry_after``; callers that may wait sleep.

With REDIS_URL the bucket lives in Redis and is updated by one Lua script, so concurrent
workers on several machines share it atomically (the script reads Redis' own clock, so
worker clocks need not agree). Without Redis (the embedded default: one process) it lives
in memory behind a lock.
"""

from __future__ import annotations

import threading
import time
from functools import lru_cache

from django.conf import settings

# KEYS[1]: bucket hash; ARGV: rate (tokens/s), burst (capacity), cost.
# Returns the wait in milliseconds (0 when the tokens were taken).
_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil then
  tokens = burst
  ts = now
end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local wait = 0
if tokens >= cost then
  tokens = tokens - cost
else
  wait = math.ceil((cost - tokens) / rate * 1000)
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return wait
"""


class _MemoryBuckets:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state: dict[str, tuple[float, float]] = {}

    def take(self, key: str, rate: float, burst: float, cost: float) -> float:
        now = time.monotonic()
        with self._lock:
            tokens, ts = self._state.get(key, (burst, now))
            tokens = min(burst, tokens + max(0.0, now - ts) * rate)
            if tokens >= cost:
                self._state[key] = (tokens - cost, now)
                return 0.0
            self._state[key] = (tokens, now)
            return (cost - tokens) / rate

    def reset(self) -> None:
        with self._lock:
            self._state.clear()


_memory = _MemoryBuckets()


@lru_cache(maxsize=4)
def _redis_script(url: str):
    import redis

    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    return client.register_script(_LUA)


def acquire(key: str, *, rate: float, burst: float | None = None, cost: float = 1.0,
            redis_url: str | None = None) -> float:  # fmt: skip
    """Take ``cost`` tokens from bucket ``key``; return 0.0, or the seconds to wait."""
    if rate <= 0:
        return 0.0  # no limit configured
    burst = max(cost, burst if burst is not None else rate)
    url = settings.REDIS_URL if redis_url is None else redis_url
    if not url:
        return _memory.take(key, rate, burst, cost)
    wait_ms = _redis_script(url)(keys=[f"ratelimit:{key}"], args=[rate, burst, cost])
    return int(wait_ms) / 1000.0


def reset_memory() -> None:
    """Empty the in-memory buckets (tests)."""
    _memory.reset()
