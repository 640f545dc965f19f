#!/usr/bin/env python
"""An SMS campaign end to end, next to the no-op drain rate of the same workers, same run.

Test mode (the simulated Twilio: realistic SIDs, and signed status callbacks queued → sent →
delivered posted over HTTP to our webhook), PostgreSQL, Redis, gunicorn serving the API and
the webhooks, and two Celery worker processes (``--workers 2``, each ``-P prefork -c 1`` by
default: on a 2-core machine two single-process workers drain more than one with ``-c 2``).

1. Baselines, the same workers: ``--noop`` bare Celery no-op messages (``celery.accumulate``,
   Celery's built-in task that does nothing but return its arguments: the issue's "no-op
   tasks sent one message each"), timed from the first publish until the queue and the
   unacked set are empty; then ``--noop`` platform no-op tasks (diagnostic.echo rows inserted
   as ``queued``, one Celery message each: claimed, run and finished like any task), timed
   until the last one ``succeeded``.
2. Campaign: ``--recipients`` sms.send tasks POSTed to /api/tasks/ through gunicorn by
   ``--clients`` threads (as a client would, one request per recipient) while the workers run;
   timed from the first POST to every task final AND every callback stored and applied.

Then it checks: tasks final == accepted; every task succeeded once (one ``succeeded`` event);
one dossier message per task with a distinct SID; three callbacks stored per message and every
one applied; nothing left queued/dispatched. MESSAGING_RATE_PER_SECOND=0 (the per-sender
limit would otherwise pace the campaign at 1 message/s) and API_THROTTLE_RATE=0.

    .venv/bin/python bench/campaign.py [--recipients 10000] [--noop 5000] [--workers 2]
                                       [--concurrency 1] [--pool prefork] [--clients 16]

Uses the database comms_bench_rel and Redis db 12 (BENCH_PG / BENCH_REDIS override the servers,
BENCH_DB / BENCH_REDIS_DB the database name and Redis db). Worker CPU per task is read from /proc
(the worker processes and their pool children).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import BIN, ROOT, bench_env, gunicorn, manage

DB_NAME = os.environ.get("BENCH_DB", "comms_bench_rel")
REDIS_DB = int(os.environ.get("BENCH_REDIS_DB", "12"))


def tree_cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) used so far by these processes and their live children."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat.parent.name) == pid or int(fields[1]) == pid:
                total += (int(fields[11]) + int(fields[12])) / tick
    return total


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipients", type=int, default=10_000)
    parser.add_argument("--noop", type=int, default=5_000)
    parser.add_argument("--workers", type=int, default=2, help="Celery worker processes")
    parser.add_argument("--concurrency", type=int, default=1, help="pool size of each worker")
    parser.add_argument("--pool", default="prefork")
    parser.add_argument("--clients", type=int, default=16, help="client threads posting the campaign")
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()

    env = bench_env(DB_NAME, REDIS_DB)
    env.update(MESSAGING_RATE_PER_SECOND="0", API_THROTTLE_RATE="0", LOG_LEVEL="ERROR")
    os.environ.update(env)
    import django

    django.setup()
    import redis

    redis.Redis.from_url(env["REDIS_URL"]).flushdb()
    reset_tables()
    key = manage(env, "create_api_key", "campaign", "--quiet").strip()

    with gunicorn(env, workers=args.web_workers, threads=4) as base:
        worker_env = {**env, "PUBLIC_BASE_URL": base}
        procs = [start_worker(worker_env, args, n) for n in range(args.workers)]
        try:
            time.sleep(3)  # workers connected
            bare_rate = bare_noop_drain(args.noop, args.timeout)
            print(
                f"bare Celery no-op drain: {args.noop} in {args.noop / bare_rate:.1f}s = {bare_rate:.0f} tasks/s"
            )
            pids = [proc.pid for proc in procs]
            cpu = tree_cpu(pids)
            noop_rate = noop_drain(args.noop, args.timeout)
            noop_cpu_ms = (tree_cpu(pids) - cpu) * 1000 / args.noop
            print(
                f"platform no-op drain: {args.noop} in {args.noop / noop_rate:.1f}s = {noop_rate:.0f} tasks/s; "
                f"worker CPU {noop_cpu_ms:.1f} ms per task"
            )
            cpu = tree_cpu(pids)
            result = campaign(base, key, args)
            campaign_cpu_ms = (tree_cpu(pids) - cpu) * 1000 / max(result["accepted"], 1)
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=60)
    check(result)
    rate = result["accepted"] / result["seconds"]
    print(f"\nCampaign benchmark: {args.recipients} recipients; {args.workers} Celery workers -P {args.pool} "
          f"-c {args.concurrency}; gunicorn {args.web_workers} gthread x4; PostgreSQL + Redis; 2 cores")  # fmt: skip
    print(f"intake (POST /api/tasks/, {args.clients} clients): {result['accepted']} accepted in "
          f"{result['intake_seconds']:.1f}s = {result['accepted'] / result['intake_seconds']:.0f}/s")  # fmt: skip
    print(f"end to end (first POST → every task final, every callback applied): {result['seconds']:.1f}s = "
          f"{rate:.0f} messages/s; worker CPU {campaign_cpu_ms:.1f} ms per message")  # fmt: skip
    print(f"bare Celery no-op drain, same workers: {bare_rate:.0f} tasks/s; campaign / no-op = "
          f"{rate / bare_rate:.0%} (target ≥ 40%)")  # fmt: skip
    print(f"platform no-op drain (diagnostic.echo: claim, run, succeed), same workers: {noop_rate:.0f} tasks/s; "
          f"campaign / platform no-op = {rate / noop_rate:.0%}")  # fmt: skip
    print(
        "checks: final == accepted, each succeeded once, one message and SID each, "
        f"{result['callbacks']} callbacks stored and applied, none lost or duplicated: OK"
    )


def start_worker(env: dict[str, str], args, n: int) -> subprocess.Popen:
    return subprocess.Popen(
        [str(BIN / "celery"), "-A", "comms_platform", "worker", "-l", "WARNING", "-P", args.pool,
         "-c", str(args.concurrency), "-Q", "orchestrator,messaging,email,content,voice,remote",
         "--without-gossip", "--without-mingle", "--without-heartbeat", "-n", f"bench{n}-{uuid.uuid4().hex[:6]}@%h"],
        cwd=ROOT, env=env,
    )  # fmt: skip


def reset_tables() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE orchestrator_task, orchestrator_taskevent, agents_common_webhookevent, dossiers_message, "
            "dossiers_contact, orchestrator_apikey CASCADE"
        )


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise SystemExit(f"timed out waiting for {what}")


def bare_noop_drain(count: int, timeout: float) -> float:
    """Celery's own floor: messages of a task that does nothing, through the same workers."""
    import redis
    from django.conf import settings

    from comms_platform.celery import app

    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    started = time.perf_counter()
    with app.producer_or_acquire() as producer:
        for _ in range(count):
            app.send_task("celery.accumulate", queue="orchestrator", producer=producer)
    # acks_late: a message leaves the "unacked" hash once its task has run.
    wait_for(lambda: client.llen("orchestrator") == 0 and client.hlen("unacked") == 0, timeout,
             "the bare no-op tasks", 0.02)  # fmt: skip
    return count / (time.perf_counter() - started)


def noop_drain(count: int, timeout: float) -> float:
    from orchestrator.models import Task
    from orchestrator.states import TaskStatus
    from orchestrator.tasks import execute_task

    batch = f"noop-{uuid.uuid4().hex[:8]}"
    tasks = Task.objects.bulk_create(
        [
            Task(
                type="diagnostic.echo",
                channel="system",
                status=TaskStatus.QUEUED,
                correlation_id=batch,
                payload={"n": n},
                agent="diagnostic",
            )
            for n in range(count)
        ],
        batch_size=1000,
    )
    ids = [str(t.id) for t in tasks]
    started = time.perf_counter()
    with execute_task.app.producer_or_acquire() as producer:
        for task_id in ids:
            execute_task.apply_async(args=[task_id], queue="orchestrator", producer=producer)
    done = Task.objects.filter(correlation_id=batch, status=TaskStatus.SUCCEEDED)
    wait_for(lambda: done.count() == count, timeout, "the no-op tasks")
    return count / (time.perf_counter() - started)


def campaign(base: str, key: str, args) -> dict:
    import requests

    from agents.common.models import WebhookEvent
    from orchestrator.models import Task
    from orchestrator.states import FINAL

    batch = f"campaign-{uuid.uuid4().hex[:8]}"
    phones = [f"+1415{200 + n // 10_000}{n % 10_000:04d}" for n in range(args.recipients * 2)]
    # Not the simulated provider's magic endings (undelivered, refused): every message is delivered.
    from agents.messaging.providers.simulated import REFUSED, UNDELIVERED

    magic = UNDELIVERED | set(REFUSED)
    phones = [p for p in phones if p[-4:] not in magic][: args.recipients]
    accepted: list[str] = []
    lock = threading.Lock()
    local = threading.local()

    def post(phone: str) -> None:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        response = session.post(f"{base}/api/tasks/", timeout=60, headers={"Authorization": f"Api-Key {key}"}, json={
            "type": "sms.send", "correlation_id": batch,
            "payload": {"to": phone, "body": "Your appointment is tomorrow at 10:00. Reply STOP to opt out."}})  # fmt: skip
        if response.status_code != 201:
            raise SystemExit(f"intake refused: {response.status_code} {response.text[:300]}")
        with lock:
            accepted.append(response.json()["id"])

    started = time.perf_counter()
    with ThreadPoolExecutor(args.clients) as pool:
        list(pool.map(post, phones))
    intake_seconds = time.perf_counter() - started
    tasks = Task.objects.filter(correlation_id=batch)
    wait_for(lambda: tasks.exclude(status__in=FINAL).count() == 0, args.timeout, "every task final", 0.5)
    expected = 3 * len(accepted)
    events = WebhookEvent.objects.filter(provider="twilio", kind="messaging_status")
    wait_for(lambda: events.filter(processed_at__isnull=False).count() >= expected, args.timeout,
             "every callback applied", 0.5)  # fmt: skip
    seconds = time.perf_counter() - started
    return {"batch": batch, "accepted": len(accepted), "ids": accepted, "seconds": seconds,
            "intake_seconds": intake_seconds, "callbacks": expected}  # fmt: skip


def check(result: dict) -> None:
    from django.db.models import Count

    from agents.common.models import WebhookEvent
    from dossiers.models import Message
    from orchestrator.models import Task, TaskEvent
    from orchestrator.states import TaskStatus

    tasks = Task.objects.filter(correlation_id=result["batch"])
    n = result["accepted"]
    assert len(set(result["ids"])) == n, "an id was returned twice"
    assert tasks.count() == n, f"{tasks.count()} tasks for {n} accepted"
    assert tasks.filter(status=TaskStatus.SUCCEEDED).count() == n, list(
        tasks.values("status").annotate(n=Count("id"))
    )
    once = TaskEvent.objects.filter(task__in=tasks, to_status=TaskStatus.SUCCEEDED).values("task_id")
    assert once.count() == n and once.distinct().count() == n, "a task succeeded twice"
    messages = Message.objects.filter(task__in=tasks, direction="outbound")
    assert messages.count() == n and messages.values("provider_sid").distinct().count() == n
    assert messages.filter(status="delivered").count() == n
    events = WebhookEvent.objects.filter(provider="twilio", kind="messaging_status")
    assert events.count() == result["callbacks"] == events.values("dedupe_key").distinct().count()
    assert not events.filter(processed_at__isnull=True).exists()


if __name__ == "__main__":
    main()
