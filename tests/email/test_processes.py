"""Real processes: the API under gunicorn, a Celery worker on the email queue, Redis.

The worker's simulated provider signs SendGrid events with the key derived from
SECRET_KEY; the web process verifies them with the same derivation — the path `make run`
takes, with nothing configured.
"""

from __future__ import annotations

import pytest
import requests

from dossiers.models import Email
from orchestrator.api.auth import api_key_create
from orchestrator.models import Task
from tests.support.services import (
    celery_worker,
    platform_env,
    redis_server,
    transactional_db,
    wait_until,
    web_server,
)

pytestmark = [transactional_db, pytest.mark.worker, pytest.mark.services]


def test_email_task_runs_in_a_worker_and_events_finish_it(tmp_path):
    key = api_key_create(name="it")[1]
    with redis_server() as (redis_url, _, _), web_server(platform_env(REDIS_URL=redis_url)) as base:
        response = requests.post(f"{base}/api/tasks/", headers={"Authorization": f"Api-Key {key}"}, timeout=30,
                                 json={"type": "email.send", "payload": {"to": "ada@example.org", "subject": "Hi",
                                                                         "text": "Hello from a worker"}})  # fmt: skip
        assert response.status_code == 201, response.text
        task_id = response.json()["id"]
        worker_env = platform_env(REDIS_URL=redis_url, PUBLIC_BASE_URL=base)
        with celery_worker(worker_env, queues="email", log_path=tmp_path / "worker.log"):
            wait_until(lambda: Email.objects.filter(task_id=task_id, status="opened").exists(), timeout=30,
                       message="the simulated open event")  # fmt: skip
    task = Task.objects.get(id=task_id)
    assert task.status == "succeeded"
    email = Email.objects.get(task_id=task_id)
    assert list(email.events.values_list("event", flat=True)) == ["processed", "delivered", "open"]
    actors = list(task.events.values_list("actor", flat=True))
    assert "agent:email" in actors and "webhook:sendgrid" in actors
