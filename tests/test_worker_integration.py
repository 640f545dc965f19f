"""Real processes: gunicorn serving the API, Redis as the broker, a Celery worker.

Each test starts its own redis-server on a free port so it can stop it without
touching the machine's shared Redis.
"""

from __future__ import annotations

import subprocess
import time

import pytest
import requests

from orchestrator import registry
from orchestrator.api.auth import api_key_create
from orchestrator.models import AgentRegistration, Task
from orchestrator.states import TaskStatus
from tests.support.services import (
    BIN,
    ROOT,
    celery_worker,
    platform_env,
    redis_server,
    transactional_db,
    wait_until,
    web_server,
)

S = TaskStatus
pytestmark = [transactional_db, pytest.mark.worker, pytest.mark.services]


def create(base_url: str, key: str, body: dict) -> requests.Response:
    return requests.post(f"{base_url}/api/tasks/", json=body, headers={"Authorization": f"Api-Key {key}"},
                         timeout=30)  # fmt: skip


def status_of(task_id: str) -> str:
    return Task.objects.values_list("status", flat=True).get(id=task_id)


def test_worker_consumes_from_redis_and_dispatches_through_the_agent(tmp_path):
    key = api_key_create(name="it")[1]
    with redis_server() as (redis_url, _, _), web_server(platform_env(REDIS_URL=redis_url)) as base:
        response = create(base, key, {"type": "diagnostic.echo", "payload": {"n": 1}})
        assert response.status_code == 201, response.text
        task_id = response.json()["id"]
        # Sent to Redis by the server's background dispatcher; no worker runs yet.
        wait_until(lambda: status_of(task_id) == S.QUEUED, message="the task to be queued")
        with celery_worker(platform_env(REDIS_URL=redis_url), log_path=tmp_path / "worker.log"):
            wait_until(lambda: status_of(task_id) == S.SUCCEEDED, message="the worker to run the task")
    task = Task.objects.get(id=task_id)
    events = list(task.events.values_list("from_status", "to_status", "actor"))
    assert events[:2] == [(S.PENDING, S.ROUTED, "orchestrator"), (S.ROUTED, S.QUEUED, "orchestrator")]
    assert events[2][:2] == (S.QUEUED, S.DISPATCHED) and events[2][2].startswith("worker:test-")
    assert events[3][:2] == (S.DISPATCHED, S.SUCCEEDED)
    assert task.result == {"echo": {"n": 1}}
    assert task.attempts == 1


def test_broker_down_at_intake_then_sweeper_dispatches(tmp_path):
    key = api_key_create(name="it")[1]
    with redis_server() as (redis_url, port, redis_proc):
        env = platform_env(REDIS_URL=redis_url)
        with web_server(env) as base:
            redis_proc.terminate()
            redis_proc.wait()
            started = time.monotonic()
            response = create(base, key, {"type": "diagnostic.echo"})
            elapsed = time.monotonic() - started
            assert response.status_code == 201, response.text
            assert response.json()["status"] == S.PENDING
            assert elapsed < 10, f"intake took {elapsed:.1f}s with the broker down"
            task_id = response.json()["id"]
            assert status_of(task_id) == S.PENDING
        with redis_server(port) as _:
            sweep = subprocess.run(
                [str(BIN / "python"), "manage.py", "sweep_tasks", "--older-than", "0"],
                cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert sweep.returncode == 0, sweep.stderr
            assert "resent 1" in sweep.stdout
            assert status_of(task_id) == S.QUEUED
            with celery_worker(env, log_path=tmp_path / "worker.log"):
                wait_until(lambda: status_of(task_id) == S.SUCCEEDED, message="the swept task to run")
    steps = list(Task.objects.get(id=task_id).events.values_list("to_status", "actor"))
    assert steps[0] == (S.ROUTED, "sweeper")


def test_task_that_keeps_killing_workers_is_dead_lettered(tmp_path):
    AgentRegistration.objects.create(task_type="test.crash", agent="crasher", channel="system",
                                     queue="orchestrator", handler="tests.support.handlers.crash_worker")  # fmt: skip
    registry.invalidate()
    key = api_key_create(name="it")[1]
    with redis_server() as (redis_url, _, _):
        env = platform_env(REDIS_URL=redis_url, TASK_MAX_ATTEMPTS="2")
        with web_server(env) as base, celery_worker(env, log_path=tmp_path / "worker.log"):
            task_id = create(base, key, {"type": "test.crash"}).json()["id"]
            wait_until(lambda: status_of(task_id) == S.FAILED, timeout=60, message="the dead letter")
    task = Task.objects.get(id=task_id)
    assert task.error_code == "dead_letter"
    assert task.attempts == 3
    reclaims = task.events.filter(to_status=S.DISPATCHED, from_status=S.DISPATCHED)
    assert [e.details["reclaimed"] for e in reclaims] == ["redelivered"]
