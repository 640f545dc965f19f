"""Redis (broker, channel layer, rate buckets) restarted during a burst of intakes.

1,000 diagnostic.echo intakes are posted by 8 client threads through gunicorn while a real
worker (prefork, 2 processes) runs; a third of the way in, the private Redis is stopped and,
a second later, started again empty (no persistence: every queued message is lost). Clients
retry a failed request with the same Idempotency-Key, as the API asks. Afterwards the sweeper
(``manage.py sweep_tasks --older-than 0``, what beat runs) re-sends what Redis lost.

Every accepted task must end ``succeeded`` — none lost, none stuck — and each exactly once:
one ``succeeded`` event per task, however many Celery messages the sweeper's re-sends and
the restart left behind.
"""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from django.db.models import Count

from orchestrator.api.auth import api_key_create
from orchestrator.models import Task, TaskEvent
from orchestrator.states import TaskStatus
from tests.faults.support import sweep
from tests.support.services import (
    celery_worker,
    platform_env,
    redis_server,
    stop_process,
    transactional_db,
    wait_until,
    web_server,
)

S = TaskStatus
INTAKES = 1000
pytestmark = [transactional_db, pytest.mark.faults, pytest.mark.services, pytest.mark.worker]


def test_every_accepted_task_finishes_once_across_a_redis_restart(tmp_path):
    key = api_key_create(name="burst")[1]
    accepted: dict[str, str] = {}
    lock = threading.Lock()
    sent = threading.Semaphore(0)

    def intake(base: str, n: int) -> None:
        idem = str(uuid.uuid4())
        for _ in range(30):
            try:
                response = requests.post(f"{base}/api/tasks/", json={"type": "diagnostic.echo", "payload": {"n": n}},
                                         headers={"Authorization": f"Api-Key {key}", "Idempotency-Key": idem},
                                         timeout=15)  # fmt: skip
            except requests.RequestException:
                time.sleep(0.2)
                continue
            if response.status_code in (200, 201):
                with lock:
                    accepted[idem] = response.json()["id"]
                sent.release()
                return
            assert response.status_code >= 500 or response.status_code == 429, response.text
            time.sleep(0.2)
        raise AssertionError(f"intake {n} never accepted")

    with redis_server() as (redis_url, port, redis_proc):
        env = platform_env(REDIS_URL=redis_url, API_THROTTLE_RATE="0")
        with (
            web_server(env) as base,
            celery_worker(env, concurrency=2, log_path=tmp_path / "worker.log"),
            ThreadPoolExecutor(8) as pool,
        ):
            futures = [pool.submit(intake, base, n) for n in range(INTAKES)]
            for _ in range(INTAKES // 3):
                assert sent.acquire(timeout=60)
            stop_process(redis_proc)
            time.sleep(1.0)
            with redis_server(port):
                for future in futures:
                    future.result(timeout=120)
                restarted_at = time.monotonic()

                def all_final() -> bool:
                    if Task.objects.exclude(status=S.SUCCEEDED).exists():
                        sweep(env)
                        return False
                    return True

                wait_until(all_final, timeout=90, interval=1.0, message="every task to finish")
                drained = time.monotonic() - restarted_at
    ids = set(accepted.values())
    assert len(ids) == len(accepted) == INTAKES  # one task per intake, retries included
    assert Task.objects.count() == INTAKES
    assert set(map(str, Task.objects.values_list("id", flat=True))) == ids
    assert Task.objects.filter(status=S.SUCCEEDED).count() == INTAKES
    per_task = TaskEvent.objects.filter(to_status=S.SUCCEEDED).values("task_id").annotate(n=Count("id"))
    assert sorted({row["n"] for row in per_task}) == [1]
    assert drained < 90
    # The restart did lose queued messages: the sweeper had to re-send some tasks.
    assert TaskEvent.objects.filter(actor="sweeper").values("task_id").distinct().count() > 0
