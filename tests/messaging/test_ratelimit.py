import os
import uuid

import pytest

from agents.common import ratelimit
from tests.support.services import unavailable


def test_memory_bucket_allows_burst_then_asks_to_wait():
    key = f"t-{uuid.uuid4()}"
    assert ratelimit.acquire(key, rate=2, burst=2, redis_url="") == 0.0
    assert ratelimit.acquire(key, rate=2, burst=2, redis_url="") == 0.0
    wait = ratelimit.acquire(key, rate=2, burst=2, redis_url="")
    assert 0.3 < wait <= 0.5


def test_zero_rate_means_unlimited():
    assert all(ratelimit.acquire("free", rate=0, redis_url="") == 0.0 for _ in range(100))


@pytest.mark.services
def test_redis_bucket_is_shared_and_atomic():
    redis_url = os.environ.get("REDIS_URL") or unavailable("needs Redis (set REDIS_URL=redis://…)")
    key = f"t-{uuid.uuid4()}"
    waits = [ratelimit.acquire(key, rate=5, burst=5, redis_url=redis_url) for _ in range(7)]
    assert waits[:5] == [0.0] * 5
    assert all(0 < w <= 0.4 for w in waits[5:])
    # Another key is another bucket.
    assert ratelimit.acquire(f"{key}-other", rate=5, redis_url=redis_url) == 0.0
