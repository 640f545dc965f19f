#!/usr/bin/env python
"""Broadcasts end to end, next to their floors, in one run (issue 19).

Test mode, PostgreSQL, a private Redis (started here, so its CPU is ours alone), gunicorn
serving the API and the webhooks, and Celery worker processes on the ``messaging`` queue.

1. Floor: a bare Django JSON view on the same gunicorn, driven by ``--load-procs`` client
   processes (keep-alive http.client); floor = its req/s ÷ 3 (three callbacks per message).
2. Intake: ``--intake`` recipients in ONE POST /api/broadcasts/ (scheduled far ahead, so nothing
   is sent), next to a raw PostgreSQL ``COPY`` of the same rows into the same table (the one raw
   SQL of this benchmark: the baseline). Timed to the 201 (every row checked, counted and stored,
   the refused ones named: accepted) and, reported beside it, until the import task has put the
   rows in the recipient table.
3. Bare Celery no-op drain (``celery.accumulate``, one message each) through the same workers.
4. End to end: a ``--recipients`` SMS broadcast through the simulated provider, which posts its
   three signed callbacks per message to the webhook; timed from the POST until every recipient
   is delivered and every callback is stored and applied. CPU per message from /proc: web
   (gunicorn), workers (minus the simulated provider's courier threads, which stand for Twilio),
   PostgreSQL (the backends of this database), Redis (the private server). The benchmark's own
   process, its database backend (its polling) and the load clients are not counted. Beat is
   not running (nothing periodic is needed). The rows an earlier run or section deleted are
   vacuumed before the measurement starts (their autovacuum is not this run's cost).
5. Rate per sender: ``--rate`` messages/s per sender over ``--senders`` senders, measured at a
   local fake Twilio (tests/fakes/twilio.py) from the arrival times of the requests.

Checks as it goes: recipients final == accepted; one send per recipient (one dossier message and
one distinct SID each); every callback stored once and applied (none for an unknown message).

    .venv/bin/python bench/broadcast.py [--recipients 20000] [--intake 100000] [--workers 2]

Uses the database comms_bench_bc (BENCH_PG overrides the server, BENCH_DB the name).
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import BIN, ROOT, bench_env, free_port, gunicorn, manage, wait_port

DB_NAME = os.environ.get("BENCH_DB", "comms_bench_bc")
TICK = os.sysconf("SC_CLK_TCK")


# --- /proc accounting ----------------------------------------------------------------------------


def _stat(path: str) -> list[str] | None:
    try:
        with open(path) as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _cpu(fields: list[str]) -> float:
    return (int(fields[11]) + int(fields[12])) / TICK


def descendants(pid: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(f"/proc/{entry}/stat")):
            parents.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [pid], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def tree_cpu(pid: int) -> float:
    return sum(_cpu(f) for p in descendants(pid) if (f := _stat(f"/proc/{p}/stat")))


def side_threads_cpu(pid: int) -> float:
    """CPU of the simulated provider's courier threads in the tree (they post the callbacks,
    standing for Twilio): the threads it names ``COURIER_THREAD`` for the operating system. The
    worker's own threads (a batch's sending threads) count as the worker's."""
    from agents.messaging.providers.simulated import COURIER_THREAD

    total = 0.0
    for p in descendants(pid):
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{p}/task/{tid}/comm") as f:
                    name = f.read().strip()
            except OSError:
                continue
            if name == COURIER_THREAD and (fields := _stat(f"/proc/{p}/task/{tid}/stat")):
                total += _cpu(fields)
    return total


def postgres_cpu(db_name: str) -> float:
    """The backends serving this database (their command line names it), but the benchmark's
    own (its polling is not the platform's work)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        own = str(cursor.fetchone()[0])
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or entry == own:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().decode(errors="replace")
        except OSError:
            continue
        if (
            cmd.startswith("postgres: ")
            and f" {db_name} " in cmd
            and (fields := _stat(f"/proc/{entry}/stat"))
        ):
            total += _cpu(fields)
    return total


class Meter:
    """CPU seconds per component between two snapshots (backends that exited are lost: the
    workers and gunicorn keep their connections, so they stay)."""

    def __init__(self, parts: dict[str, object]) -> None:
        self.parts = parts
        self.start = self.read()

    def read(self) -> dict[str, float]:
        return {name: read() for name, read in self.parts.items()}

    def used(self) -> dict[str, float]:
        now = self.read()
        return {name: now[name] - self.start[name] for name in now}


# --- load clients -----------------------------------------------------------------------------------


def _load_proc(port: int, path: str, seconds: float, conns: int, out) -> None:
    import threading

    count = [0] * conns

    def run(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                response.read()
            except (OSError, http.client.HTTPException):
                conn.close()  # the server closed the kept-alive connection: open another
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                continue
            if response.status == 200:
                count[i] += 1

    threads = [threading.Thread(target=run, args=(i,)) for i in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put(sum(count))


def bare_view_rate(base: str, *, procs: int, conns: int, seconds: float) -> float:
    port = int(base.rsplit(":", 1)[1])
    queue: multiprocessing.Queue = multiprocessing.Queue()
    workers = [multiprocessing.Process(target=_load_proc, args=(port, "/bench/bare", seconds, conns, queue))
               for _ in range(procs)]  # fmt: skip
    started = time.perf_counter()
    for w in workers:
        w.start()
    total = sum(queue.get() for _ in workers)
    for w in workers:
        w.join()
    return total / (time.perf_counter() - started)


# --- services -----------------------------------------------------------------------------------------


def start_redis() -> tuple[subprocess.Popen, str]:
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="bench-redis-")
    proc = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                             "--appendonly", "no", "--dir", workdir], stdout=subprocess.DEVNULL)  # fmt: skip
    wait_port(port)
    return proc, f"redis://127.0.0.1:{port}/0"


def start_worker(env: dict[str, str], n: int, queues: str = "messaging,orchestrator") -> subprocess.Popen:
    return subprocess.Popen(
        [str(BIN / "celery"), "-A", "comms_platform", "worker", "-l", "WARNING", "-P", "prefork", "-c", "1",
         "-Q", queues, "--without-gossip", "--without-mingle", "--without-heartbeat",
         "-n", f"bench-bc{n}-{uuid.uuid4().hex[:6]}@%h"],
        cwd=ROOT, env=env,
    )  # fmt: skip


def stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(timeout=60)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.25) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise SystemExit(f"timed out waiting for {what}")


def phones(n: int, offset: int = 0) -> list[str]:
    from agents.messaging.providers.simulated import REFUSED, UNDELIVERED

    magic = UNDELIVERED | set(REFUSED)
    out, i = [], offset
    while len(out) < n:
        p = f"+1415{200 + i // 10_000}{i % 10_000:04d}"
        if p[-4:] not in magic:
            out.append(p)
        i += 1
    return out


def post_json(base: str, path: str, key: str, body: dict) -> tuple[int, dict, float]:
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=600)
    data = json.dumps(body).encode()
    started = time.perf_counter()
    conn.request("POST", path, body=data, headers={"Content-Type": "application/json",
                                                   "Authorization": f"Api-Key {key}"})  # fmt: skip
    response = conn.getresponse()
    payload = json.loads(response.read() or b"{}")
    return response.status, payload, time.perf_counter() - started


# --- the sections ---------------------------------------------------------------------------------------


def reset() -> None:
    from agents.common.models import WebhookEvent
    from broadcasts.models import Broadcast, Recipient
    from dossiers.models import Message

    Recipient.objects.all().delete()
    Broadcast.objects.all().delete()
    WebhookEvent.objects.all().delete()
    Message.objects.all().delete()
    vacuum()


def vacuum() -> None:
    """The rows an earlier run (or section) deleted are vacuumed before anything is measured:
    an autovacuum of them in the middle of the end-to-end run is not its cost."""
    from django.db import connection

    with connection.cursor() as cursor:
        for table in (
            "broadcasts_recipient",
            "broadcasts_broadcast",
            "agents_common_webhookevent",
            "dossiers_message",
        ):
            cursor.execute(f"VACUUM ANALYZE {table}")


def intake(base: str, key: str, n: int) -> dict[str, float]:
    import psycopg
    from django.conf import settings

    from broadcasts.models import Broadcast, Recipient

    numbers = phones(n)
    body = {"name": "intake", "channel": "sms", "body": "Hi {{ name }}, your code is {{ code }}.",
            "scheduled_for": "2099-01-01T00:00:00Z",
            "recipients": [{"to": p, "variables": {"name": f"N{i}", "code": str(i)}} for i, p in enumerate(numbers)]}  # fmt: skip
    started = time.perf_counter()
    status, payload, api_seconds = post_json(base, "/api/broadcasts/", key, body)
    if status != 201:
        raise SystemExit(f"intake refused: {status} {str(payload)[:300]}")
    assert payload["progress"]["accepted"] == n and not payload["rejected"], payload["progress"]
    # Accepted (checked, counted, stored) at the 201; the import task then inserts the rows.
    broadcast = Broadcast.objects.filter(id=payload["id"])
    wait_for(lambda: broadcast.exclude(status="importing").exists(), 600, "the import", 0.05)
    imported_seconds = time.perf_counter() - started
    accepted = Recipient.objects.filter(broadcast_id=payload["id"]).count()
    assert accepted == n and broadcast.get().status == "scheduled", (accepted, n)
    # The baseline: the same rows COPYed into the same table (its indexes and constraints).
    baseline = Broadcast.objects.create(name="copy baseline", channel="sms", body="x", status="draft")
    db = settings.DATABASES["default"]
    dsn = f"host={db['HOST'] or '127.0.0.1'} port={db['PORT'] or 5432} user={db['USER']} dbname={db['NAME']}"
    if db.get("PASSWORD"):
        dsn += f" password={db['PASSWORD']}"
    columns = "(broadcast_id, line, address, variables, status, reason, sender, provider_id, updated_at)"
    with psycopg.connect(dsn) as conn:
        started = time.perf_counter()
        with conn.cursor() as cur, cur.copy(f"COPY broadcasts_recipient {columns} FROM STDIN") as copy:
            for i, p in enumerate(numbers):
                copy.write_row((baseline.id, i + 1, p, json.dumps({"name": f"N{i}", "code": str(i)}),
                                "pending", "", "", "", "now"))  # fmt: skip
        conn.commit()
        copy_seconds = time.perf_counter() - started
    assert Recipient.objects.filter(broadcast=baseline).count() == n
    Broadcast.objects.filter(id__in=[payload["id"], baseline.id]).delete()
    vacuum()
    return {"api_seconds": api_seconds, "imported_seconds": imported_seconds, "copy_seconds": copy_seconds}


def bare_noop_drain(count: int) -> float:
    import redis
    from django.conf import settings

    from comms_platform.celery import app

    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    started = time.perf_counter()
    with app.producer_or_acquire() as producer:
        for _ in range(count):
            app.send_task("celery.accumulate", queue="orchestrator", producer=producer)
    wait_for(
        lambda: client.llen("orchestrator") == 0 and client.hlen("unacked") == 0, 600, "no-op drain", 0.02
    )
    return count / (time.perf_counter() - started)


def end_to_end(base: str, key: str, n: int, meter: Meter, timeout: float) -> dict:
    from agents.common.models import WebhookEvent
    from broadcasts.models import Recipient

    body = {"name": "e2e", "channel": "sms", "body": "Your appointment is tomorrow at 10:00, {{ name }}. Reply STOP to opt out.",
            "recipients": [{"to": p, "variables": {"name": f"N{i}"}} for i, p in enumerate(phones(n, 500_000))]}  # fmt: skip
    started = time.perf_counter()
    status, payload, _ = post_json(base, "/api/broadcasts/", key, body)
    if status != 201:
        raise SystemExit(f"broadcast refused: {status} {str(payload)[:300]}")
    bid = payload["id"]
    recipients = Recipient.objects.filter(broadcast_id=bid)
    wait_for(
        lambda: recipients.exclude(status="delivered").count() == 0, timeout, "every recipient delivered", 0.5
    )
    events = WebhookEvent.objects.filter(provider="twilio", kind="messaging_status")
    wait_for(
        lambda: events.filter(processed_at__isnull=False).count() >= 3 * n,
        timeout,
        "every callback applied",
        0.5,
    )
    seconds = time.perf_counter() - started
    return {"id": bid, "seconds": seconds, "cpu": meter.used()}


def check(bid: str, n: int) -> None:
    from agents.common.models import WebhookEvent
    from broadcasts.models import Broadcast, Recipient
    from dossiers.models import Message

    recipients = Recipient.objects.filter(broadcast_id=bid)
    assert recipients.count() == n, "recipients != accepted"
    assert recipients.filter(status="delivered").count() == n, "a recipient is not final (delivered)"
    assert recipients.values("provider_id").distinct().count() == n, "provider ids are not distinct"
    messages = Message.objects.filter(provider_sid__in=recipients.values("provider_id"), direction="outbound")
    assert messages.count() == n, "not one dossier message per recipient"
    assert Message.objects.filter(direction="outbound").count() == n, (
        "a message was written twice (a second send)"
    )
    events = WebhookEvent.objects.filter(provider="twilio", kind="messaging_status")
    assert events.count() == 3 * n == events.values("dedupe_key").distinct().count(), (
        "callbacks stored != 3 per message"
    )
    assert not events.filter(processed_at__isnull=True).exists(), "a callback was not applied"
    assert not events.filter(outcome__in=["unknown_message", "error"]).exists(), "a callback found no message"
    assert Broadcast.objects.get(id=bid).status == "completed"


def rate_check(
    env: dict[str, str], base: str, key: str, rate: float, senders: int, per_sender: int, latency: float = 0.0
) -> list[tuple[str, float]]:
    from django.conf import settings

    from tests.fakes.twilio import FakeTwilio

    fake = FakeTwilio(account_sid=settings.TWILIO_ACCOUNT_SID, auth_token=settings.TWILIO_AUTH_TOKEN).start()
    fake.latency = latency  # seconds per Messages call (real Twilio: ~0.3)
    rate_env = {
        **env,
        "PUBLIC_BASE_URL": base,
        "TWILIO_API_BASE_URL": fake.base_url,
        "TWILIO_ACCOUNT_SID": settings.TWILIO_ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": settings.TWILIO_AUTH_TOKEN,
    }
    procs = [start_worker(rate_env, 10 + n, "messaging") for n in range(2)]
    try:
        time.sleep(3)
        numbers = phones(senders * per_sender, 900_000)
        froms = [f"+1500555{1000 + i:04d}" for i in range(senders)]
        status, payload, _ = post_json(base, "/api/broadcasts/", key, {
            "name": "rate", "channel": "sms", "body": "rate check", "rate_per_second": rate, "senders": froms,
            "recipients": [{"to": p} for p in numbers]})  # fmt: skip
        if status != 201:
            raise SystemExit(f"rate broadcast refused: {status} {payload}")
        wait_for(lambda: len(fake.posts()) >= len(numbers), 600, "the paced sends")
    finally:
        stop(procs)
        fake.stop()
    counts = {}
    for p in fake.posts():
        counts.setdefault(p.form["To"][0], 0)
        counts[p.form["To"][0]] += 1
    assert len(counts) == len(numbers) and max(counts.values()) == 1, "rate check: a recipient was sent twice"
    measured = []
    for sender in froms:
        times = sorted(p.at for p in fake.posts() if p.form["From"][0] == sender)
        # From the second request: the first includes a worker's first use of the SDK.
        measured.append((sender, (len(times) - 2) / (times[-1] - times[1])))
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipients", type=int, default=20_000)
    parser.add_argument("--intake", type=int, default=100_000)
    parser.add_argument("--noop", type=int, default=5_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--load-procs", type=int, default=2)
    parser.add_argument("--load-conns", type=int, default=4)
    parser.add_argument("--rate", type=float, default=25.0)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument(
        "--twilio-latency", type=float, default=0.0,
        help="seconds the fake Twilio takes per call in the rate check (real Twilio: ~0.3)",
    )  # fmt: skip
    parser.add_argument(
        "--rate-per-sender", type=int, default=100, help="messages per sender in the rate check"
    )
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument(
        "--intake-only", type=int, default=0, metavar="N",
        help="only the intake section, N times in a row (ratios to COPY each time, then the median)",
    )  # fmt: skip
    args = parser.parse_args()
    if not shutil.which("redis-server"):
        raise SystemExit("redis-server is needed")

    redis_proc, redis_url = start_redis()
    try:
        env = bench_env(DB_NAME, 0)
        env.update(REDIS_URL=redis_url, MESSAGING_RATE_PER_SECOND="0", API_THROTTLE_RATE="0", LOG_LEVEL="ERROR",
                   BROADCAST_PARALLEL_BATCHES=str(args.workers))  # fmt: skip
        os.environ.update(env)
        import django

        django.setup()
        reset()
        key = manage(env, "create_api_key", "broadcast-bench", "--quiet").strip()
        run(env, key, args, redis_proc)
    finally:
        redis_proc.terminate()
        redis_proc.wait()


def run(env: dict[str, str], key: str, args, redis_proc: subprocess.Popen) -> None:
    with gunicorn(env, workers=args.web_workers, threads=4) as base:
        worker_env = {**env, "PUBLIC_BASE_URL": base}
        procs = [start_worker(worker_env, n) for n in range(args.workers)]
        try:
            _run(env, key, args, redis_proc, base, worker_env, procs)
        finally:
            stop(procs)


def _intake_line(n: int, result: dict[str, float]) -> tuple[float, str]:
    api_rate, copy_rate = n / result["api_seconds"], n / result["copy_seconds"]
    ratio = api_rate / copy_rate
    return ratio, (
        f"intake: {n} recipients in one POST, accepted (201) in {result['api_seconds']:.2f}s = {api_rate:.0f}/s; "
        f"COPY of the same rows: {result['copy_seconds']:.2f}s = {copy_rate:.0f}/s; ratio {ratio:.0%} (target ≥ 25%); "
        f"rows in the table (the import task done) after {result['imported_seconds']:.2f}s = "
        f"{n / result['imported_seconds']:.0f}/s ({n / result['imported_seconds'] / copy_rate:.0%} of COPY)"
    )


def _run(env, key, args, redis_proc, base, worker_env, procs) -> None:
    web_pid = _gunicorn_master(base)
    time.sleep(3)  # the workers start
    bare_view_rate(base, procs=args.load_procs, conns=args.load_conns, seconds=3)  # warm up
    bare = bare_view_rate(base, procs=args.load_procs, conns=args.load_conns, seconds=5)
    floor = bare / 3
    print(f"bare Django view: {bare:.0f} req/s → floor {floor:.0f} messages/s (three callbacks each)")
    if args.intake_only:
        ratios = []
        for _ in range(args.intake_only):
            ratio, line = _intake_line(args.intake, intake(base, key, args.intake))
            ratios.append(ratio)
            print(line)
        print(
            f"intake ratio to COPY, median of {len(ratios)}: {statistics.median(ratios):.1%} (target ≥ 25%)"
        )
        return
    print(_intake_line(args.intake, intake(base, key, args.intake))[1])
    noop = bare_noop_drain(args.noop)
    print(f"bare Celery no-op drain: {noop:.0f} tasks/s")
    worker_cpu = lambda: sum(tree_cpu(p.pid) - side_threads_cpu(p.pid) for p in procs)  # noqa: E731
    courier_cpu = lambda: sum(side_threads_cpu(p.pid) for p in procs)  # noqa: E731
    meter = Meter({"web": lambda: tree_cpu(web_pid), "workers": worker_cpu,
                   "postgres": lambda: postgres_cpu(DB_NAME), "redis": lambda: tree_cpu(redis_proc.pid),
                   "simulated provider (apart)": courier_cpu})  # fmt: skip
    e2e = end_to_end(base, key, args.recipients, meter, args.timeout)
    stop(procs)  # the rate check starts its own, pointed at a fake Twilio
    check(e2e["id"], args.recipients)
    n = args.recipients
    rate = n / e2e["seconds"]
    cpu = e2e["cpu"]
    platform = sum(v for k, v in cpu.items() if "apart" not in k)
    print(f"\nend to end: {n} SMS, one POST → every recipient delivered, every callback applied: "
          f"{e2e['seconds']:.1f}s = {rate:.0f} messages/s; floor {floor:.0f}/s → {rate / floor:.0%} "
          f"(target ≥ 30%); / bare Celery no-op drain = {rate / noop:.0%}")  # fmt: skip
    print(
        f"CPU per message (platform): {platform * 1000 / n:.2f} ms (target ≤ 5 ms) = "
        + ", ".join(f"{k} {v * 1000 / n:.2f}" for k, v in cpu.items())
    )
    print(f"checks: {n} recipients final (delivered) == accepted; {n} distinct SIDs, one dossier message each; "
          f"{3 * n} callbacks stored once and applied: OK")  # fmt: skip
    measured = rate_check(worker_env, base, key, args.rate, args.senders, args.rate_per_sender,
                          args.twilio_latency)  # fmt: skip
    within = all(args.rate * 0.95 <= m <= args.rate for _, m in measured)
    print(
        f"rate per sender (target {args.rate:g}/s, within 5 %, never above): "
        + ", ".join(f"{s} {m:.2f}/s" for s, m in measured)
        + (" OK" if within else " OUTSIDE")
    )


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def _gunicorn_master(base: str) -> int:
    port = base.rsplit(":", 1)[1]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmd = f.read().split(b"\0")
            except OSError:
                continue
            if any(b"gunicorn" in c for c in cmd[:2]) and f"127.0.0.1:{port}".encode() in cmd:
                fields = _stat(f"/proc/{entry}/stat")
                if fields and b"gunicorn" not in _cmdline(int(fields[1])):
                    return int(entry)
    raise SystemExit("gunicorn master not found")


if __name__ == "__main__":
    main()
