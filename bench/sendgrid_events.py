#!/usr/bin/env python
"""SendGrid event webhook throughput: signed batches POSTed to /webhooks/sendgrid/events/.

Served as in production (gunicorn sync workers, PostgreSQL). Each batch holds ``--batch``
new events (processed/delivered/open/click) for emails of one task each; every event is
verified (one ECDSA check per batch), de-duplicated, stored and applied. Also times the
ECDSA P-256 verification alone.

    .venv/bin/python bench/sendgrid_events.py [--batches 200] [--batch 50] [--threads 4] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import bench_env, gunicorn, manage

SETUP = """
from django.utils import timezone
from dossiers.models import Email
from orchestrator.models import Task
ids = []
for i in range({n}):
    t = Task.objects.create(type="email.send", channel="email", status="in_progress")
    ids.append(Email.objects.create(task=t, from_address="b@example.com", to_address=f"r{{i}}@example.org",
                                    provider="sendgrid", provider_message_id=f"bench{{i}}", status="sent",
                                    occurred_at=timezone.now()).id)
print(",".join(map(str, ids)))
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    import django
    import requests

    env = bench_env(db_name="comms_bench_email", redis_db=3)
    import os

    os.environ.update({k: env[k] for k in ("DJANGO_SETTINGS_MODULE", "COMMS_MODE", "DATABASE_URL")})
    django.setup()
    from agents.email import event_keys

    key = event_keys.test_private_key()
    public = key.public_key()
    body = b'[{"event":"delivered"}]' * 20
    sig = event_keys.sign(key, "1700000000", body)
    from base64 import b64decode

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    n, started = 2000, time.perf_counter()
    for _ in range(n):
        public.verify(b64decode(sig), b"1700000000" + body, ec.ECDSA(hashes.SHA256()))
    verify_us = (time.perf_counter() - started) / n * 1e6

    email_ids = manage(env, "shell", "-c", SETUP.format(n=args.batches)).strip().split(",")
    names = ["processed", "delivered", "open", "click"]

    def batch_for(i: int) -> bytes:
        email_id = email_ids[i]
        events = [
            {"email": f"r{i}@example.org", "timestamp": int(time.time()), "event": names[j % 4],
             "sg_event_id": secrets.token_urlsafe(16), "sg_message_id": f"bench{i}.filter0001",
             "email_id": email_id, "category": ["email.send"]}
            for j in range(args.batch)
        ]  # fmt: skip
        return json.dumps(events).encode()

    with gunicorn(env, workers=args.workers) as base:
        url = f"{base}/webhooks/sendgrid/events/"
        session = requests.Session()

        def post(i: int) -> float:
            raw, ts = batch_for(i), str(int(time.time()))
            headers = {"Content-Type": "application/json", "X-Twilio-Email-Event-Webhook-Timestamp": ts,
                       "X-Twilio-Email-Event-Webhook-Signature": event_keys.sign(key, ts, raw)}  # fmt: skip
            t0 = time.perf_counter()
            response = session.post(url, data=raw, headers=headers, timeout=60)
            assert response.status_code == 200, response.text
            return time.perf_counter() - t0

        started = time.perf_counter()
        with ThreadPoolExecutor(args.threads) as pool:
            latencies = sorted(pool.map(post, range(args.batches)))
        elapsed = time.perf_counter() - started
    events = args.batches * args.batch
    print(f"ECDSA P-256 verify: {verify_us:.0f} µs per batch signature")
    print(f"{args.batches} batches x {args.batch} events, {args.threads} client threads, {args.workers} workers: "
          f"{events / elapsed:.0f} events/s, {args.batches / elapsed:.1f} batches/s, "
          f"batch p50 {statistics.median(latencies) * 1000:.0f} ms, "
          f"p99 {latencies[int(len(latencies) * 0.99) - 1] * 1000:.0f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
