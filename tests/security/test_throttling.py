"""API throttling per API key (API_THROTTLE_RATE)."""

from __future__ import annotations

import time
import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from comms_platform import ratelimit
from orchestrator.api.auth import api_key_create
from orchestrator.api.throttling import parse_rate
from tests.support.services import redis_server

pytestmark = pytest.mark.django_db


@pytest.fixture(params=["memory", "redis"])
def backend(request, settings):
    if request.param == "redis":
        import redis

        # Key ids restart with each test database; buckets of an earlier run must not count.
        client = redis.Redis.from_url(request.getfixturevalue("redis_url"))
        for key in client.scan_iter("ratelimit:api:*"):
            client.delete(key)
    else:
        settings.REDIS_URL = ""
    ratelimit.reset_memory()
    return request.param


def test_parse_rate():
    assert parse_rate("50/s") == (50.0, 50.0)
    assert parse_rate("120/m") == (2.0, 120.0)
    assert parse_rate("0") is None
    assert parse_rate("") is None
    with pytest.raises(ValueError):
        parse_rate("5/fortnight")


def test_key_over_its_rate_gets_429_with_retry_after(api, settings, backend):
    settings.API_THROTTLE_RATE = "3/m"
    for _ in range(3):
        assert api.get("/api/tasks/").status_code == 200
    response = api.get("/api/tasks/")
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "throttled"
    assert int(response["Retry-After"]) >= 1
    # Another key has its own bucket.
    other = api_key_create(name="other")[1]
    assert api.get("/api/tasks/", HTTP_AUTHORIZATION=f"Api-Key {other}").status_code == 200


def test_zero_turns_throttling_off(api, settings, backend):
    settings.API_THROTTLE_RATE = "0"
    for _ in range(20):
        assert api.get("/api/tasks/").status_code == 200


def test_throttle_costs_one_redis_round_trip_and_no_query(api, settings):
    """The bucket is one EVALSHA per request; the throttle adds no database query."""
    import redis

    with redis_server() as (url, _port, _proc):
        settings.REDIS_URL = url
        _one_round_trip(api, settings, redis.Redis.from_url(url))


def _one_round_trip(api, settings, client):
    settings.API_THROTTLE_RATE = "100/s"
    api.get("/api/tasks/")  # loads the script, warms the key cache
    client.config_resetstat()
    before = 0
    settings.API_THROTTLE_RATE = "0"
    with CaptureQueriesContext(connection) as unthrottled:
        api.get("/api/tasks/")
    settings.API_THROTTLE_RATE = "100/s"
    with CaptureQueriesContext(connection) as throttled:
        api.get("/api/tasks/")
    stats = client.info("commandstats")
    assert stats.get("cmdstat_evalsha", {}).get("calls", 0) - before == 1
    # Nothing else was sent: the rest are this test's own commands and the script's insides.
    inside = {"cmdstat_time", "cmdstat_hmget", "cmdstat_hset", "cmdstat_pexpire"}
    own = {"cmdstat_info", "cmdstat_config|resetstat"}
    assert set(stats) - inside - own == {"cmdstat_evalsha"}, stats
    assert len(throttled) == len(unthrottled)


def test_redis_down_lets_requests_through(api, settings):
    settings.API_THROTTLE_RATE = "1/m"
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    assert api.get("/api/tasks/").status_code == 200
    assert api.get("/api/tasks/").status_code == 200


# --- Leased tokens (acquire_leased, the throttle's hot path) ------------------------------


@pytest.fixture
def private_redis(settings):
    """A private Redis (its commandstats are this test's alone) as REDIS_URL; leases emptied."""
    import redis

    with redis_server() as (url, _port, _proc):
        settings.REDIS_URL = url
        ratelimit.reset_memory()
        yield redis.Redis.from_url(url)
    ratelimit.reset_memory()


def _evalsha_calls(client) -> int:
    return client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)


def _bucket_tokens(client, key: str) -> float:
    return float(client.hget(f"ratelimit:{key}", "tokens"))


def _burst(key: str, calls: int, *, rate: float, burst: float) -> tuple[int, float]:
    """(admitted, elapsed seconds) for ``calls`` back-to-back calls on one key."""
    started = time.monotonic()
    admitted = sum(ratelimit.acquire_leased(key, rate=rate, burst=burst) == 0.0 for _ in range(calls))
    return admitted, time.monotonic() - started


def test_busy_key_costs_far_fewer_round_trips_than_requests(private_redis):
    key = f"busy-{uuid.uuid4()}"
    ratelimit.acquire_leased(f"warm-{key}", rate=1000, burst=1000)  # loads the script
    private_redis.config_resetstat()
    admitted, _ = _burst(key, 200, rate=1000, burst=1000)
    assert admitted == 200
    # Chunks of 1, 2, 4, … up to a tenth of a second's worth (100): about eight round trips.
    assert _evalsha_calls(private_redis) <= 20


def test_api_throttle_spends_leased_tokens_locally(api, settings, private_redis):
    settings.API_THROTTLE_RATE = "1000/s"
    api.get("/api/tasks/")  # loads the script, warms the key cache
    private_redis.config_resetstat()
    for _ in range(20):
        assert api.get("/api/tasks/").status_code == 200
    assert _evalsha_calls(private_redis) <= 10


def test_burst_never_admits_more_than_the_bucket_holds(private_redis):
    key = f"burst-{uuid.uuid4()}"
    admitted, elapsed = _burst(key, 200, rate=50, burst=50)
    assert 50 <= admitted <= 50 + elapsed * 50 + 1, (admitted, elapsed)


def test_refused_call_says_how_long_to_wait(private_redis):
    key = f"wait-{uuid.uuid4()}"
    waits = [ratelimit.acquire_leased(key, rate=10, burst=2) for _ in range(3)]
    assert waits[:2] == [0.0, 0.0]
    assert 0 < waits[2] <= 0.1


def test_quiet_key_takes_exactly_one_token_per_call(private_redis):
    key = f"quiet-{uuid.uuid4()}"
    ratelimit.acquire_leased(f"warm-{key}", rate=1000, burst=1000)  # loads the script
    private_redis.config_resetstat()
    # A full bucket refills to full between calls, so what is left shows what each call took.
    for _ in range(3):
        assert ratelimit.acquire_leased(key, rate=1000, burst=1000) == 0.0
        assert _bucket_tokens(private_redis, key) == 999
        time.sleep(0.15)  # more than the 0.1 s lease window
    assert _evalsha_calls(private_redis) == 3
    # A key that was busy and went quiet is back to one token per call, not its last chunk.
    _burst(key, 100, rate=1000, burst=1000)
    time.sleep(0.15)
    assert ratelimit.acquire_leased(key, rate=1000, burst=1000) == 0.0
    assert _bucket_tokens(private_redis, key) == 999


def test_a_process_leases_at_most_a_tenth_of_a_seconds_worth(private_redis):
    """At 50/s a chunk is at most 5 tokens: one busy process cannot drain the shared bucket."""
    key = f"cap-{uuid.uuid4()}"
    admitted, _ = _burst(key, 20, rate=50, burst=50)
    assert admitted == 20
    # Taken from the bucket: the 20 spent plus at most 4 still leased (refills only add).
    assert _bucket_tokens(private_redis, key) >= 50 - 20 - 4


def test_two_processes_sharing_a_bucket_cannot_together_exceed_it(private_redis, monkeypatch):
    """Each process has its own leases (the module's ``_leases``); the bucket is one."""
    key = f"shared-{uuid.uuid4()}"
    process_leases = [{}, {}]
    admitted = [0, 0]
    started = time.monotonic()
    for i in range(400):
        monkeypatch.setattr(ratelimit, "_leases", process_leases[i % 2])
        admitted[i % 2] += ratelimit.acquire_leased(key, rate=50, burst=50) == 0.0
    elapsed = time.monotonic() - started
    assert all(process_leases), "each simulated process leased tokens of its own"
    assert 50 <= sum(admitted) <= 50 + elapsed * 50 + 1, (admitted, elapsed)
    assert min(admitted) > 0


def test_threads_sharing_a_process_lease_cannot_exceed_the_bucket(private_redis):
    import threading

    key = f"threads-{uuid.uuid4()}"
    admitted: list[int] = []
    barrier = threading.Barrier(4)

    def worker() -> None:
        barrier.wait()
        admitted.append(_burst(key, 100, rate=50, burst=50)[0])

    started = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    elapsed = time.monotonic() - started
    assert len(admitted) == 4
    assert 50 <= sum(admitted) <= 50 + elapsed * 50 + 1, (admitted, elapsed)
