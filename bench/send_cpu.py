#!/usr/bin/env python
"""CPU per task of the worker's own path, in process: a platform no-op task and an sms.send.

No broker, no HTTP, no worker loop: the cost of our code per task, measured with
``time.process_time`` (this process's CPU, so PostgreSQL's own work is not counted) around
``execute_task.apply()`` — the Celery task the worker runs (claim, handler, finish), eagerly.

- no-op: ``diagnostic.echo`` rows inserted as ``queued`` (as bench/campaign.py's platform
  no-op drain does): claimed, run and finished like any task;
- sms.send: rows inserted as ``queued`` with a distinct recipient each (a new contact each, as
  in a campaign), sent through the simulated Twilio with its status callbacks off
  (``MESSAGING_SIMULATED_CALLBACKS = False``), ``MESSAGING_RATE_PER_SECOND=0``.

Test mode, PostgreSQL, Redis. Each round runs ``--n`` tasks of each kind after ``--warmup``
untimed ones; the figure is the median over ``--rounds`` rounds (no-op and sms.send alternate) of the mean CPU per task.
Runs unchanged on the code before issue 14 (it imports only what both have), so the two can
be compared on one machine in one sitting:

    .venv/bin/python bench/send_cpu.py [--n 300] [--rounds 5] [--warmup 50] [--statements]

Uses the database comms_bench_cpu and Redis db 13 (BENCH_PG / BENCH_REDIS override the
servers, BENCH_DB / BENCH_REDIS_DB the database name and Redis db). ``--statements`` also
counts the SQL statements per task (Django's ``execute_wrapper``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import bench_env

DB_NAME = os.environ.get("BENCH_DB", "comms_bench_cpu")
REDIS_DB = int(os.environ.get("BENCH_REDIS_DB", "13"))


def make_tasks(kind: str, count: int) -> list[str]:
    from orchestrator.models import Task
    from orchestrator.states import TaskStatus

    batch = f"cpu-{uuid.uuid4().hex[:8]}"
    if kind == "noop":
        rows = [
            Task(type="diagnostic.echo", channel="system", status=TaskStatus.QUEUED, correlation_id=batch,
                 payload={"n": n}, agent="diagnostic")
            for n in range(count)
        ]  # fmt: skip
    else:
        from agents.messaging.providers.simulated import REFUSED, UNDELIVERED

        magic = UNDELIVERED | set(REFUSED)
        start = int(uuid.uuid4().int % 7_000_000)  # exchanges 200-899: valid numbers in area code 415
        phones = (f"+1415{200 + (start + n) // 10_000}{(start + n) % 10_000:04d}" for n in range(count * 2))
        phones = [p for p in phones if p[-4:] not in magic][:count]
        rows = [
            Task(type="sms.send", channel="sms", status=TaskStatus.QUEUED, correlation_id=batch, agent="messaging",
                 payload={"to": phone, "body": "Your appointment is tomorrow at 10:00. Reply STOP to opt out."})
            for phone in phones
        ]  # fmt: skip
    return [str(t.id) for t in Task.objects.bulk_create(rows, batch_size=1000)]


def run(ids: list[str], statements: list[int] | None = None) -> float:
    """Mean CPU milliseconds per task for these ids."""
    from django.db import connection

    from orchestrator.models import Task
    from orchestrator.tasks import execute_task

    count = [0]

    def counter(execute, sql, params, many, context):
        count[0] += 1
        return execute(sql, params, many, context)

    cpu = 0.0
    wrapper = connection.execute_wrapper(counter) if statements is not None else contextlib.nullcontext()
    with wrapper:
        for task_id in ids:
            started = time.process_time()
            result = execute_task.apply(args=[task_id])
            cpu += time.process_time() - started
            if result.failed():
                raise SystemExit(f"task {task_id} raised: {result.result!r}")
    if statements is not None:
        statements.append(count[0] / len(ids))
    # A no-op succeeds; a send the provider accepted waits in_progress for its callbacks.
    done = Task.objects.filter(id__in=ids, status__in=["succeeded", "in_progress"]).count()
    if done != len(ids):
        seen = sorted(set(Task.objects.filter(id__in=ids).values_list("status", "error_code")))
        raise SystemExit(f"{done} of {len(ids)} tasks ran (succeeded, or accepted and in progress): {seen}")
    return cpu * 1000 / len(ids)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=300, help="timed tasks of each kind per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--statements", action="store_true", help="count SQL statements per task")
    parser.add_argument("--profile", metavar="FILE", help="cProfile the sms.send rounds into FILE")
    args = parser.parse_args()

    env = bench_env(DB_NAME, REDIS_DB)
    env.update(MESSAGING_RATE_PER_SECOND="0", API_THROTTLE_RATE="0", LOG_LEVEL="ERROR")
    os.environ.update(env)
    import django

    django.setup()
    import redis
    from django.conf import settings

    settings.MESSAGING_SIMULATED_CALLBACKS = False
    redis.Redis.from_url(env["REDIS_URL"]).flushdb()
    from bench.campaign import reset_tables

    reset_tables()

    figures: dict[str, list[float]] = {"noop": [], "sms": []}
    counts: dict[str, list[int]] = {"noop": [], "sms": []}
    for kind in figures:
        run(make_tasks(kind, args.warmup))
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile(time.process_time)  # CPU, not wall time
    for _ in range(args.rounds):
        for kind in figures:  # alternate the two kinds within a round
            ids = make_tasks(kind, args.n)
            if profiler and kind == "sms":
                profiler.enable()
            figures[kind].append(run(ids, counts[kind] if args.statements else None))
            if profiler and kind == "sms":
                profiler.disable()
    if profiler:
        profiler.dump_stats(args.profile)
    prepare = settings.DATABASES["default"].get("OPTIONS", {}).get("prepare_threshold")
    print(f"CPU per task in process (execute_task.apply, process_time), {args.rounds} rounds of {args.n}, "
          f"PostgreSQL, test mode, prepare_threshold={prepare}")  # fmt: skip
    names = {"noop": "platform no-op (diagnostic.echo)", "sms": "sms.send (simulated, no callbacks)"}
    for kind, values in figures.items():
        line = (f"{names[kind]}: median {statistics.median(values):.2f} ms "
                f"(rounds: {', '.join(f'{v:.2f}' for v in values)})")  # fmt: skip
        if counts[kind]:
            line += f"; {statistics.median(counts[kind]):.1f} statements per task"
        print(line)


if __name__ == "__main__":
    main()
