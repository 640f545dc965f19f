#!/usr/bin/env python
"""Task intake throughput: POST /api/tasks/ next to a bare Django JSON view, same server, same run.

Served as in production: gunicorn with sync workers, PostgreSQL, Redis as the broker
(no worker consumes during the run; the queue is emptied afterwards).

Two phases: the maximum rate (wrk's connections as fast as they can), then the latency at
**half of that rate** (the issue's "p99 < 30 ms at half of its maximum rate"): every connection
waits between requests (wrk's ``delay()``), the wait tuned over two short runs until the
measured rate is within 5 % of half the maximum, then measured for ``--seconds``.

    .venv/bin/python bench/api_intake.py [--seconds 10] [--connections 8] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import bench_env, gunicorn, manage, wrk


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--threads", type=int, default=4, help="threads per worker (gthread when > 1, as bin/render-web)"
    )
    parser.add_argument(
        "--idempotency-keys", action="store_true", help="send a unique Idempotency-Key each time"
    )
    args = parser.parse_args()

    env = bench_env()
    # The per-key throttle stays on (its Redis round trip is part of intake's cost) with a
    # limit the benchmark cannot reach, so no request is refused.
    env["API_THROTTLE_RATE"] = "1000000/s"
    key = manage(env, "create_api_key", "bench", "--quiet").strip()
    body = json.dumps({"type": "diagnostic.echo", "correlation_id": "bench", "payload": {"text": "hello"}})
    idem = 'counter = counter + 1\n    wrk.headers["Idempotency-Key"] = "bench-" .. os.time() .. "-" .. counter\n'
    script = f"""
counter = 0
wrk.method = "POST"
wrk.body = {json.dumps(body)}
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Api-Key {key}"
request = function()
    {idem if args.idempotency_keys else ""}return wrk.format()
end
"""
    with gunicorn(env, workers=args.workers, threads=args.threads) as base:
        wrk(f"{base}/bench/bare", seconds=2, connections=args.connections)  # warm up
        wrk(f"{base}/api/tasks/", seconds=2, connections=args.connections, script=script)
        bare = wrk(f"{base}/bench/bare", seconds=args.seconds, connections=args.connections)
        intake = wrk(f"{base}/api/tasks/", seconds=args.seconds, connections=args.connections, script=script)
        half = at_rate(f"{base}/api/tasks/", script, rate=intake["rps"] / 2, seconds=args.seconds)
    cleanup(env)
    kind = "sync" if args.threads == 1 else f"gthread x{args.threads}"
    print(f"\nAPI intake benchmark: gunicorn {args.workers} {kind} workers, PostgreSQL, Redis broker, "
          f"wrk -c {args.connections}, {args.seconds}s each")  # fmt: skip
    print(f"{'endpoint':<28}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'non-2xx':>10}")
    for name, r in (("bare Django JSON view", bare), ("POST /api/tasks/", intake)):
        print(f"{name:<28}{r['rps']:>10.0f}{r['p50']:>10.2f}{r['p99']:>10.2f}{r['errors']:>10}")
    ratio = intake["rps"] / bare["rps"]
    print(f"intake / bare = {ratio:.0%} (target ≥ 35%)")
    print(f"at half the maximum rate: {half['rps']:.0f} req/s, p50 {half['p50']:.2f} ms, "
          f"p99 {half['p99']:.2f} ms (target p99 < 30 ms), non-2xx {half['errors']}")  # fmt: skip


def at_rate(url: str, script: str, *, rate: float, seconds: int, connections: int = 8) -> dict[str, float]:
    """wrk held near ``rate`` requests/s: each connection waits ``wait`` ms between requests,
    the wait corrected from two short runs' measured rate, then a run of ``seconds``."""
    wait = max(connections / rate * 1000 - 2.0, 0.0)
    for _ in range(2):
        probe = wrk(url, seconds=3, connections=connections, script=_paced(script, wait))
        per_request = connections / probe["rps"] * 1000 - wait  # the measured service time, ms
        wait = max(connections / rate * 1000 - per_request, 0.0)
    return wrk(url, seconds=seconds, connections=connections, script=_paced(script, wait))


def _paced(script: str, wait_ms: float) -> str:
    return f"{script}\ndelay = function()\n    return {wait_ms:.3f}\nend\n"


def cleanup(env: dict[str, str]) -> None:
    """Drop what the run created: tasks and the queued messages."""
    import psycopg
    import redis

    with psycopg.connect(env["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("TRUNCATE orchestrator_taskevent, orchestrator_task CASCADE")
        conn.execute("DELETE FROM orchestrator_apikey WHERE name = 'bench'")
    redis.Redis.from_url(env["REDIS_URL"]).flushdb()


if __name__ == "__main__":
    main()
