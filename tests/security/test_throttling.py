"""API throttling per API key (API_THROTTLE_RATE)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from agents.common import ratelimit
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
