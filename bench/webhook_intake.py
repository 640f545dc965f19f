#!/usr/bin/env python
"""Status-callback intake: signed Twilio status callbacks per second (and p99) that
POST /webhooks/twilio/messaging/status/ absorbs, next to a bare Django view on the same
server in the same run.

Served as in production: gunicorn sync workers, PostgreSQL, Redis (channel layer). Every
callback is distinct and correctly signed (Twilio's RequestValidator, the test-mode
token) and refers to a real in-flight message, so each one runs the whole path:
signature check, WebhookEvent insert under its dedupe key, dossier message update and a
task transition with its TaskEvent. Per message the mix is sent → delivered → read.

Then an open-loop run at half the measured callback rate gives the latency under a
steady load (a Python client sending on a fixed schedule; latency counted from the
scheduled time, so a stall is not hidden).

    .venv/bin/python bench/webhook_intake.py [--seconds 10] [--connections 8] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import bench_env, gunicorn, wrk

DB_NAME, REDIS_DB = "comms_bench_msg", 11
STATUS_PATH = "/webhooks/twilio/messaging/status/"
STATUSES = ("sent", "delivered", "read")


def setup_django(env: dict[str, str]) -> None:
    os.environ.update(env)
    import django

    django.setup()


def make_messages(count: int) -> list[tuple[str, str]]:
    """``count`` in-flight SMS tasks with their dossier messages; returns (task id, SID)."""
    from django.utils import timezone

    from dossiers.models import Message
    from orchestrator.models import Task

    now = timezone.now()
    tasks = [Task(id=uuid.uuid4(), type="sms.send", channel="sms", status="in_progress", agent="messaging",
                  provider_id="SM" + uuid.uuid4().hex) for _ in range(count)]  # fmt: skip
    Task.objects.bulk_create(tasks, batch_size=2000)
    Message.objects.bulk_create(
        [Message(task_id=t.id, channel="sms", direction="outbound", from_address="+15005550006",
                 to_address="+14155550100", body="bench", provider_sid=t.provider_id, status="queued",
                 occurred_at=now) for t in tasks],
        batch_size=2000,
    )  # fmt: skip
    return [(str(t.id), t.provider_id) for t in tasks]


def signed_requests(base: str, messages: list[tuple[str, str]]) -> list[tuple[str, str, str]]:
    """(path, signature, form body) for every callback, signed as Twilio signs."""
    from django.conf import settings
    from twilio.request_validator import RequestValidator

    validator = RequestValidator(settings.TWILIO_AUTH_TOKEN)
    out = []
    for task_id, sid in messages:
        path = f"{STATUS_PATH}?task={task_id}"
        for status in STATUSES:
            params = {"MessageSid": sid, "SmsSid": sid, "MessageStatus": status, "SmsStatus": status,
                      "AccountSid": settings.TWILIO_ACCOUNT_SID, "From": "+15005550006", "To": "+14155550100",
                      "ApiVersion": "2010-04-01"}  # fmt: skip
            out.append((path, validator.compute_signature(base + path, params), urlencode(params)))
    return out


def wrk_script(requests: list[tuple[str, str, str]]) -> tuple[str, str]:
    """A wrk Lua script that replays the pre-signed requests in order (data in a side file)."""
    fd, data_path = tempfile.mkstemp(suffix=".tsv")
    with os.fdopen(fd, "w") as f:
        for path, signature, body in requests:
            f.write(f"{path}\t{signature}\t{body}\n")
    script = f"""
local reqs = {{}}
local i = 0
init = function(args)
  for line in io.lines("{data_path}") do
    local path, sig, body = line:match("([^\\t]+)\\t([^\\t]+)\\t(.*)")
    reqs[#reqs + 1] = wrk.format("POST", path, {{["Content-Type"] = "application/x-www-form-urlencoded",
      ["X-Twilio-Signature"] = sig}}, body)
  end
end
request = function()
  i = i % #reqs + 1
  return reqs[i]
end
"""
    return script, data_path


async def open_loop(base: str, requests: list[tuple[str, str, str]], rate: float, seconds: float) -> dict:
    """Send at a fixed rate; latency from each request's scheduled time (no coordinated omission)."""
    import aiohttp

    total = min(len(requests), int(rate * seconds))
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector) as session:
        start = time.perf_counter() + 0.2

        async def one(k: int) -> None:
            nonlocal errors
            path, signature, body = requests[k]
            scheduled = start + k / rate
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature}
            async with session.post(base + path, data=body, headers=headers) as response:
                await response.read()
                if response.status >= 300:
                    errors += 1
            latencies.append((time.perf_counter() - scheduled) * 1000)

        await asyncio.gather(*(one(k) for k in range(total)))
        elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "rps": total / elapsed,
        "p50": latencies[len(latencies) // 2],
        "p99": latencies[int(len(latencies) * 0.99) - 1],
        "errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--messages", type=int, default=8000, help="in-flight messages for the full-speed run"
    )
    args = parser.parse_args()

    env = bench_env(db_name=DB_NAME, redis_db=REDIS_DB)
    setup_django(env)
    cleanup(env)
    warm, main_set, steady_set = (
        make_messages(500),
        make_messages(args.messages),
        make_messages(args.messages),
    )
    with gunicorn(env, workers=args.workers) as base:
        warm_script, warm_data = wrk_script(signed_requests(base, warm))
        script, data = wrk_script(signed_requests(base, main_set))
        wrk(f"{base}/bench/bare", seconds=2, connections=args.connections)  # warm up
        wrk(f"{base}{STATUS_PATH}", seconds=2, connections=args.connections, script=warm_script)
        bare = wrk(f"{base}/bench/bare", seconds=args.seconds, connections=args.connections)
        hooks = wrk(f"{base}{STATUS_PATH}", seconds=args.seconds, connections=args.connections, script=script)
        steady_rate = hooks["rps"] / 2
        steady = asyncio.run(open_loop(base, signed_requests(base, steady_set), steady_rate, args.seconds))
        for path in (warm_data, data):
            os.unlink(path)
    replayed = hooks["rps"] * args.seconds / (3 * args.messages)
    stats = summary()
    cleanup(env)
    print(f"\nStatus webhook benchmark: gunicorn {args.workers} sync workers, PostgreSQL, Redis, "
          f"wrk -c {args.connections}, {args.seconds}s each")  # fmt: skip
    print(f"{'endpoint':<40}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'non-2xx':>10}")
    rows = (("bare Django JSON view", bare), ("signed status callbacks (wrk)", hooks),
            (f"callbacks at {steady_rate:.0f}/s (open loop)", steady))  # fmt: skip
    for name, r in rows:
        print(f"{name:<40}{r['rps']:>10.0f}{r['p50']:>10.2f}{r['p99']:>10.2f}{r['errors']:>10}")
    print(
        f"callbacks / bare = {hooks['rps'] / bare['rps']:.0%} (target ≥ 35%); "
        f"p99 at half rate = {steady['p99']:.1f} ms (target < 50 ms)"
    )
    print(
        f"distinct callbacks used: {min(replayed, 1.0):.0%} of the prepared set"
        + (" (the set wrapped: some were duplicates)" if replayed > 1 else "")
    )
    print(f"rows written: {stats}")


def summary() -> dict[str, int]:
    from agents.common.models import WebhookEvent
    from orchestrator.models import TaskEvent

    return {"webhook_events": WebhookEvent.objects.count(), "task_events": TaskEvent.objects.count()}


def cleanup(env: dict[str, str]) -> None:
    import psycopg
    import redis

    with psycopg.connect(env["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("TRUNCATE agents_common_webhookevent, dossiers_message, orchestrator_taskevent, "
                     "orchestrator_task CASCADE")  # fmt: skip
    redis.Redis.from_url(env["REDIS_URL"]).flushdb()


if __name__ == "__main__":
    main()
