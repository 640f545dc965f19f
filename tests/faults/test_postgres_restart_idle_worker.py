"""PostgreSQL restarted under an idle and a busy worker: delivery resumes by itself.

A private PostgreSQL (its own port and folder) and a private Redis hold everything; gunicorn,
one Celery worker and beat run as deployed. The worker runs one ``diagnostic.echo`` (so it keeps
a database connection), idles, and PostgreSQL is restarted (``pg_ctl stop -m fast`` + start).
While it is down the worker reports its agents unhealthy (the heartbeat's error key in Redis,
``comms_agent_worker_error`` in /metrics afterwards is 0 again) and the web's /readyz says 503
naming the database. Once it is back, new tasks all succeed within 30 s with the same worker
process (no restart). Then the same with tasks in flight: a burst is posted and PostgreSQL is
restarted under it; every task still succeeds, each exactly once.
"""

from __future__ import annotations

import subprocess
import time

import psycopg
import pytest
import redis
import requests

from tests.faults.support import celery_beat, pg_start, pg_stop, postgres_server
from tests.support.services import (
    BIN,
    ROOT,
    celery_worker,
    platform_env,
    redis_server,
    wait_until,
    web_server,
)

pytestmark = [pytest.mark.faults, pytest.mark.services, pytest.mark.worker]
RECOVERY_SECONDS = 30


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([str(BIN / "python"), "manage.py", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def statuses(db_url: str, ids: list[str]) -> dict[str, str]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT id::text, status FROM orchestrator_task WHERE id = ANY(%s::uuid[])", [ids]
        )
        return dict(rows.fetchall())


def post_echo(base: str, key: str, n: int) -> str:
    response = requests.post(f"{base}/api/tasks/", headers={"Authorization": f"Api-Key {key}"}, timeout=30,
                             json={"type": "diagnostic.echo", "payload": {"n": n}})  # fmt: skip
    assert response.status_code == 201, response.text
    return response.json()["id"]


def all_succeeded(db_url: str, ids: list[str]) -> bool:
    try:
        found = statuses(db_url, ids)
    except psycopg.OperationalError:
        return False
    return len(found) == len(ids) and set(found.values()) == {"succeeded"}


def test_postgres_restart_under_an_idle_then_a_busy_worker(tmp_path):
    with postgres_server() as (admin_url, port, datadir), redis_server() as (redis_url, _, _):
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute("CREATE DATABASE comms")
        db_url = f"postgres://postgres@127.0.0.1:{port}/comms"
        env = platform_env(DATABASE_URL=db_url, REDIS_URL=redis_url, API_THROTTLE_RATE="0",
                           HEARTBEAT_INTERVAL_SECONDS="1", TASK_SWEEP_INTERVAL_SECONDS="5",
                           DB_CONN_MAX_AGE="600")  # fmt: skip
        manage(env, "migrate", "--no-input")
        key = next(
            line for line in manage(env, "create_api_key", "faults").splitlines() if line.startswith("cp_")
        )
        broker = redis.Redis.from_url(redis_url)
        with (
            web_server(env) as base,
            celery_worker(env, queues="orchestrator", log_path=tmp_path / "worker.log") as worker,
            celery_beat(env, str(tmp_path)),
        ):
            first = post_echo(base, key, 0)
            wait_until(lambda: all_succeeded(db_url, [first]), timeout=60, message="the first echo")
            time.sleep(2)  # idle: the worker keeps its connection

            pg_stop(datadir)
            # The worker says so instead of looking healthy, and so does the web's /readyz.
            wait_until(lambda: broker.get("comms:heartbeat-error:diagnostic"), timeout=15,
                       message="the worker to report its database unreachable")  # fmt: skip
            assert b"database" in broker.get("comms:heartbeat-error:diagnostic")
            ready = requests.get(f"{base}/readyz", timeout=10)
            assert ready.status_code == 503 and "database" in ready.json()["failed"]
            scrape = requests.get(f"{base}/metrics", timeout=10)
            assert 'comms_agent_worker_error{agent="diagnostic"} 1.0' in scrape.text, scrape.text[-2000:]
            pg_start(datadir, port)
            restarted = time.monotonic()

            ids = [post_echo(base, key, n) for n in range(1, 11)]
            wait_until(lambda: all_succeeded(db_url, ids), timeout=RECOVERY_SECONDS, interval=0.2,
                       message="every echo after the restart")  # fmt: skip
            idle_recovery = time.monotonic() - restarted
            assert worker.poll() is None, "the worker was restarted or died"
            wait_until(lambda: broker.get("comms:heartbeat-error:diagnostic") is None, timeout=10,
                       message="the worker to report healthy again")  # fmt: skip

            # Busy: a burst in flight while PostgreSQL restarts.
            burst = [post_echo(base, key, n) for n in range(100, 140)]
            pg_stop(datadir)
            time.sleep(1)
            pg_start(datadir, port)
            restarted = time.monotonic()
            wait_until(lambda: all_succeeded(db_url, burst), timeout=RECOVERY_SECONDS, interval=0.2,
                       message="every echo of the burst")  # fmt: skip
            busy_recovery = time.monotonic() - restarted
            assert worker.poll() is None
            with psycopg.connect(db_url) as conn:
                done = conn.execute(
                    "SELECT task_id::text, count(*) FROM orchestrator_taskevent WHERE to_status = 'succeeded' "
                    "GROUP BY task_id"
                ).fetchall()
            assert {n for _, n in done} == {1} and len(done) == 1 + len(ids) + len(burst)
    print(f"recovery after the restart: idle {idle_recovery:.1f}s, busy {busy_recovery:.1f}s")
