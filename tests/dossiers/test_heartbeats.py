"""Heartbeats: health from the last beat, routing skips unhealthy agents, GET /api/agents/."""

from __future__ import annotations

import time

import pytest
import requests

from orchestrator import heartbeats
from orchestrator.api.auth import api_key_create
from orchestrator.models import AgentRegistration, Task
from orchestrator.services import task_create, task_dispatch
from tests.support.services import (
    celery_worker,
    platform_env,
    redis_server,
    transactional_db,
    wait_until,
    web_server,
)


@pytest.fixture
def monitored(redis_url, monkeypatch, settings):
    """Health checks on, against the test Redis (the suite otherwise runs tasks in process)."""
    settings.HEARTBEAT_STALE_SECONDS = 30
    monkeypatch.setattr(heartbeats, "embedded", lambda: False)
    monkeypatch.setattr(heartbeats, "_client", None)
    heartbeats._health_cache.clear()
    client = heartbeats.redis_client()
    client.delete(heartbeats.KEY.format(agent="diagnostic"), "orchestrator")
    yield client
    client.delete(heartbeats.KEY.format(agent="diagnostic"), "orchestrator")
    heartbeats._health_cache.clear()
    monkeypatch.setattr(heartbeats, "_client", None)


def beat(client, agent: str, seconds_ago: float) -> None:
    client.set(heartbeats.KEY.format(agent=agent), repr(time.time() - seconds_ago))
    heartbeats._health_cache.clear()


@pytest.mark.django_db
def test_stale_agent_gets_no_work_and_fresh_agent_does(monitored, monkeypatch):
    sent = []
    monkeypatch.setattr("orchestrator.tasks.execute_task.apply_async", lambda **kw: sent.append(kw))
    task, _ = task_create(type="diagnostic.echo")  # the on_commit dispatch does not run here
    beat(monitored, "diagnostic", seconds_ago=31)
    assert heartbeats.agent_healthy(agent="diagnostic") is False
    assert task_dispatch(task_id=task.id) is False
    assert Task.objects.get(id=task.id).status == "pending" and sent == []
    beat(monitored, "diagnostic", seconds_ago=1)
    assert task_dispatch(task_id=task.id) is True
    assert Task.objects.get(id=task.id).status == "queued" and len(sent) == 1


@pytest.mark.django_db
def test_never_seen_agent_is_unknown_and_routed_but_a_registry_beat_counts(monitored):
    assert heartbeats.agent_healthy(agent="diagnostic") is True
    AgentRegistration.objects.filter(agent="diagnostic").update(last_heartbeat_at="2020-01-01T00:00:00Z")
    heartbeats._health_cache.clear()
    assert heartbeats.agent_healthy(agent="diagnostic") is False  # the Redis key expired: the row remembers


@pytest.mark.django_db
def test_publish_writes_redis_and_the_registry(monitored):
    agents = heartbeats.heartbeat_publish(queues=["orchestrator"])
    assert "diagnostic" in agents and set(agents) == set(heartbeats.agents_for_queues(["orchestrator"]))
    assert float(monitored.get(heartbeats.KEY.format(agent="diagnostic"))) == pytest.approx(
        time.time(), abs=5
    )
    assert monitored.ttl(heartbeats.KEY.format(agent="diagnostic")) > 0
    assert AgentRegistration.objects.get(task_type="diagnostic.echo").last_heartbeat_at is not None
    assert heartbeats.heartbeat_publish(queues=["nobody-listens"]) == []


@pytest.mark.django_db
def test_agents_api_shows_health_depth_and_last_beat(api, monitored):
    beat(monitored, "diagnostic", seconds_ago=2)
    monitored.rpush("orchestrator", "m1", "m2", "m3")
    body = api.get("/api/agents/").json()["results"]
    diag = next(a for a in body if a["agent"] == "diagnostic")
    assert (diag["health"], diag["healthy"], diag["queue_depth"]) == ("healthy", True, 3)
    assert diag["task_types"] == ["diagnostic.echo"] and diag["queues"] == ["orchestrator"]
    assert diag["last_heartbeat_at"] is not None
    beat(monitored, "diagnostic", seconds_ago=60)
    diag = next(a for a in api.get("/api/agents/").json()["results"] if a["agent"] == "diagnostic")
    assert (diag["health"], diag["healthy"]) == ("unhealthy", False)


@pytest.mark.django_db
def test_embedded_mode_agents_are_healthy_with_empty_queues(api):
    diag = next(a for a in api.get("/api/agents/").json()["results"] if a["agent"] == "diagnostic")
    assert (diag["health"], diag["queue_depth"]) == ("healthy", 0)


# --- A real worker ---------------------------------------------------------------------------


def agent_state(base: str, key: str) -> dict:
    rows = requests.get(f"{base}/api/agents/", headers={"Authorization": f"Api-Key {key}"}, timeout=10).json()
    return next(a for a in rows["results"] if a["agent"] == "diagnostic")


def submit(base: str, key: str) -> str:
    response = requests.post(f"{base}/api/tasks/", json={"type": "diagnostic.echo"},
                             headers={"Authorization": f"Api-Key {key}"}, timeout=10)  # fmt: skip
    assert response.status_code == 201, response.text
    return response.json()["id"]


def status_of(task_id: str) -> str:
    return Task.objects.values_list("status", flat=True).get(id=task_id)


@transactional_db
@pytest.mark.services
def test_worker_that_stops_heartbeating_becomes_unhealthy_and_gets_no_new_work(tmp_path):
    key = api_key_create(name="hb")[1]
    timing = {"HEARTBEAT_INTERVAL_SECONDS": "1", "HEARTBEAT_STALE_SECONDS": "3"}
    with redis_server() as (redis_url, _, _):
        env = platform_env(REDIS_URL=redis_url, **timing)
        with web_server(env) as base:
            with celery_worker(env, log_path=tmp_path / "worker.log"):
                wait_until(lambda: agent_state(base, key)["health"] == "healthy", message="a first heartbeat")
                first = submit(base, key)
                wait_until(lambda: status_of(first) == "succeeded", message="the healthy worker to run it")
            # The worker is gone: its heartbeat goes stale, and routing stops.
            wait_until(lambda: agent_state(base, key)["health"] == "unhealthy", timeout=10,
                       message="the agent to turn unhealthy")  # fmt: skip
            second = submit(base, key)
            assert status_of(second) == "pending"
            assert agent_state(base, key)["queue_depth"] == 0  # nothing was sent to the broker
            assert AgentRegistration.objects.get(task_type="diagnostic.echo").last_heartbeat_at is not None
