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
_REFILL = """
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
"""
_SAVE = """
redis.call('HSET', KEYS[1], 'tokens', tokens, 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
"""
# Takes ``cost`` tokens or none; returns the wait in microseconds (0 when they were taken): a
# wait rounded up to whole milliseconds made a paced sender (25/s: 40 ms a token) ~1 % slower.
_LUA = (
    _REFILL
    + """
local wait = 0
if tokens >= cost then
  tokens = tokens - cost
else
  wait = math.ceil((cost - tokens) / rate * 1000000)
end
"""
    + _SAVE
    + "return wait"
)
# Takes up to ``cost`` whole tokens, at least one; returns {taken, wait in ms}.
_LEASE_LUA = (
    _REFILL
    + """
local taken = math.min(cost, math.floor(tokens))
local wait = 0
if taken >= 1 then
  tokens = tokens - taken
else
  taken = 0
  wait = math.ceil((1 - tokens) / rate * 1000)
end
"""
    + _SAVE
    + "return {taken, wait}"
)


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
def _redis_client(url: str):
    import redis

    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


@lru_cache(maxsize=8)
def _redis_script(url: str, lua: str = _LUA):
    return _redis_client(url).register_script(lua)


def acquire(key: str, *, rate: float, burst: float | None = None, cost: float = 1.0,
            redis_url: str | None = None) -> float:  # fmt: skip
    """Take ``cost`` tokens from bucket ``key``; return 0.0, or the seconds to wait."""
    if rate <= 0:
        return 0.0  # no limit configured
    burst = max(cost, burst if burst is not None else rate)
    url = settings.REDIS_URL if redis_url is None else redis_url
    if not url:
        return _memory.take(key, rate, burst, cost)
    wait_us = _redis_script(url)(keys=[f"ratelimit:{key}"], args=[rate, burst, cost])
    return int(wait_us) / 1_000_000


def reset_memory() -> None:
    """Empty the in-memory buckets and this process's leases (tests)."""
    _memory.reset()
    with _leases_lock:
        _leases.clear()


class _Lease:
    __slots__ = ("chunk", "expires", "tokens")

    def __init__(self) -> None:
        self.tokens, self.expires, self.chunk = 0, 0.0, 1


_leases: dict[str, _Lease] = {}
_leases_lock = threading.Lock()


def acquire_leased(key: str, *, rate: float, burst: float | None = None, window: float = 0.1,
                   max_chunk: int = 100) -> float:  # fmt: skip
    """``acquire`` for a hot path: take one token, usually without a Redis round trip.

    A process that keeps drawing on the same bucket takes tokens from Redis in chunks and
    spends them locally: the chunk starts at one token (so a quiet key costs one round
    trip per call, exactly like ``acquire``) and doubles each time the previous chunk ran
    out within ``window`` seconds, up to ``rate * window`` (at most ``max_chunk``). Tokens
    still unspent after ``window`` seconds are dropped, so a process never holds more than
    a tenth of a second's worth. Every token still comes out of the one shared bucket: the
    limit holds across processes; only its spending is batched.
    """
    if rate <= 0:
        return 0.0
    burst = max(1.0, burst if burst is not None else rate)
    url = settings.REDIS_URL
    if not url:
        return _memory.take(key, rate, burst, 1.0)
    now = time.monotonic()
    cap = max(1, min(max_chunk, int(rate * window)))
    with _leases_lock:
        lease = _leases.get(key)
        if lease is None:
            lease = _leases[key] = _Lease()
        if lease.tokens > 0 and now < lease.expires:
            lease.tokens -= 1
            return 0.0
        # Ran dry while still fresh: demand is high, take more next time; otherwise one.
        chunk = min(cap, lease.chunk * 2) if now < lease.expires else 1
    taken, wait_ms = _redis_script(url, _LEASE_LUA)(keys=[f"ratelimit:{key}"], args=[rate, burst, chunk])
    taken = int(taken)
    if taken < 1:
        return int(wait_ms) / 1000.0
    with _leases_lock:
        lease.tokens = (lease.tokens if now < lease.expires else 0) + taken - 1
        lease.expires = now + window
        lease.chunk = chunk
    return 0.0
