#!/usr/bin/env python
"""Contact timeline at 1,000,000 dossier records for 10,000 contacts.

Seeds PostgreSQL database ``comms_bench_dossier`` with COPY (once; ``--reseed`` redoes it):
500k messages, 250k emails, 150k calls and 100k artifacts spread over 10,000 contacts.
Then, for random contacts, measures the first page (50 entries) of the contact timeline:

1. raw SQL: the same page as one UNION ALL statement over psycopg (the floor);
2. the selector ``dossiers.selectors.timeline_for_contact`` in process (target: p95 <= 2x raw);
3. the whole API request ``GET /api/contacts/<id>/timeline/`` through gunicorn (2 sync
   workers, as in production) from one keep-alive client (target: p95 < 15 ms);

and counts the queries of one API request (bounded: one for the page, whatever the data).

    .venv/bin/python bench/dossier_timeline.py [--samples 500] [--reseed]
"""

from __future__ import annotations

import argparse
import io
import os
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import bench_env, gunicorn, manage

DB_NAME = "comms_bench_dossier"
CONTACTS = 10_000
COUNTS = {"message": 500_000, "email": 250_000, "call": 150_000, "artifact": 100_000}
PAGE = 50
START = datetime(2025, 1, 1, tzinfo=UTC)
SPAN_SECONDS = 365 * 86400

RAW_SQL = """
SELECT * FROM (
  (SELECT 'message' AS kind, id::text AS key, id AS n, occurred_at, task_id, correlation_id, channel, direction,
          status, body AS summary FROM dossiers_message WHERE contact_id = %(c)s
   ORDER BY occurred_at DESC, n DESC LIMIT %(n)s)
  UNION ALL
  (SELECT 'email', id::text AS key, id AS n, occurred_at, task_id, correlation_id, 'email', direction, status, subject
   FROM dossiers_email WHERE contact_id = %(c)s ORDER BY occurred_at DESC, n DESC LIMIT %(n)s)
  UNION ALL
  (SELECT 'call', id::text AS key, id AS n, occurred_at, task_id, correlation_id, 'voice', direction, status, answered_by
   FROM dossiers_call WHERE contact_id = %(c)s ORDER BY occurred_at DESC, n DESC LIMIT %(n)s)
  UNION ALL
  (SELECT 'artifact', id::text AS key, 0 AS n, occurred_at, task_id, correlation_id, '', '', '', kind
   FROM dossiers_artifact WHERE contact_id = %(c)s ORDER BY occurred_at DESC, id DESC LIMIT %(n)s)
) t ORDER BY occurred_at DESC, kind DESC, n DESC, key DESC LIMIT %(page)s
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--reseed", action="store_true")
    args = parser.parse_args()

    env = bench_env(DB_NAME, redis_db=4)
    os.environ.update(
        {k: env[k] for k in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "LOG_LEVEL")}
    )
    import psycopg

    with psycopg.connect(env["DATABASE_URL"], autocommit=True) as conn:
        if args.reseed or not seeded(conn):
            seed(conn)
        contacts = [r[0] for r in conn.execute("SELECT id FROM dossiers_contact")]
    rng = random.Random(7)
    sample = [rng.choice(contacts) for _ in range(args.samples)]

    import django

    django.setup()
    with psycopg.connect(env["DATABASE_URL"], autocommit=True) as conn:
        raw, selector, queries_selector = time_raw_and_selector(conn, sample)
    api_queries = count_api_queries(sample[0])
    key = manage(env, "create_api_key", "bench-dossier", "--contacts", "read", "--quiet").strip()
    with gunicorn(env, workers=2) as base:
        api, bare = time_api(base, key, sample)

    print(f"\nDossier timeline benchmark: {sum(COUNTS.values()):,} records, {CONTACTS:,} contacts, "
          f"first page of {PAGE}, {args.samples} random contacts; load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    print(f"{'level':<44}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}")
    for name, r in (("raw SQL (one UNION ALL, psycopg)", raw), ("selector timeline_for_contact (in process)", selector),
                    ("API GET /api/contacts/<id>/timeline/", api), ("  same server, bare Django JSON view", bare)):  # fmt: skip
        print(f"{name:<44}{pct(r, 50):>9.2f}{pct(r, 95):>9.2f}{pct(r, 99):>9.2f}")
    ratio = pct(selector, 95) / pct(raw, 95)
    print(
        f"selector p95 / raw p95 = {ratio:.2f}x (target <= 2x); API p95 {pct(api, 95):.2f} ms (target < 15 ms)"
    )
    print(f"queries: selector {queries_selector} per page; whole API request {len(api_queries)}:")
    for sql in api_queries:
        print(f"  {sql}")


def seeded(conn) -> bool:
    total = 0
    for table in ("message", "email", "call", "artifact"):
        total += conn.execute(f"SELECT count(*) FROM dossiers_{table}").fetchone()[0]  # noqa: S608 (fixed names)
    contacts = conn.execute("SELECT count(*) FROM dossiers_contact").fetchone()[0]
    return contacts == CONTACTS and total == sum(COUNTS.values())


def seed(conn) -> None:
    started = time.monotonic()
    conn.execute("TRUNCATE dossiers_message, dossiers_email, dossiers_call, dossiers_transcriptturn, "
                 "dossiers_emailevent, dossiers_artifact, dossiers_consent, dossiers_consentchange, "
                 "dossiers_auditlog, dossiers_contact CASCADE")  # fmt: skip
    rng = random.Random(42)
    ids = [uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(CONTACTS)]
    now = datetime.now(UTC).isoformat()
    copy(conn, "dossiers_contact",
         "id, name, phone, email, whatsapp, locale, timezone, email_undeliverable, avatar, synthetic, created_at, "
         "updated_at",
         (f"{cid}\tContact {i}\t+1415{5000000 + i:07d}\tc{i}@example.com\twhatsapp:+1415{5000000 + i:07d}\ten\tUTC"
          f"\tf\t\tf\t{now}\t{now}\n" for i, cid in enumerate(ids)))  # fmt: skip

    def when() -> str:
        return (
            START + timedelta(seconds=rng.randrange(SPAN_SECONDS), microseconds=rng.randrange(10**6))
        ).isoformat()

    def contact() -> str:
        return str(ids[rng.randrange(CONTACTS)])

    copy(conn, "dossiers_message",
         "contact_id, correlation_id, channel, direction, from_address, to_address, body, media, status, "
         "error_code, error_message, segments, encoding, occurred_at, created_at, updated_at",
         (f"{contact()}\tcorr-{rng.randrange(200_000)}\t{rng.choice(('sms', 'whatsapp'))}\t"
          f"{rng.choice(('inbound', 'outbound'))}\t+14155550100\t+14155551234\tHello, message {i}\t[]\tdelivered"
          f"\t\t\t1\tGSM-7\t{when()}\t{now}\t{now}\n" for i in range(COUNTS["message"])))  # fmt: skip
    copy(conn, "dossiers_email",
         "contact_id, correlation_id, direction, from_address, to_address, subject, text_body, provider, "
         "provider_message_id, status, occurred_at, created_at, updated_at",
         (f"{contact()}\tcorr-{rng.randrange(200_000)}\toutbound\tshop@example.net\tc@example.com\tOrder {i}"
          f"\tDear customer\tsendgrid\tmsg-{i}\tdelivered\t{when()}\t{now}\t{now}\n"
          for i in range(COUNTS["email"])))  # fmt: skip
    copy(conn, "dossiers_call",
         "contact_id, correlation_id, direction, from_address, to_address, status, answered_by, duration_seconds, "
         "end_reason, occurred_at, created_at, updated_at",
         (f"{contact()}\tcorr-{rng.randrange(200_000)}\t{rng.choice(('inbound', 'outbound'))}\t+14155550100"
          f"\t+14155551234\tcompleted\thuman\t{rng.randrange(600)}\t\t{when()}\t{now}\t{now}\n"
          for _ in range(COUNTS["call"])))  # fmt: skip
    copy(conn, "dossiers_artifact",
         "id, contact_id, correlation_id, kind, storage_key, content_type, size, sha256, source_url, occurred_at, "
         "created_at",
         (f"{uuid.UUID(int=rng.getrandbits(128), version=4)}\t{contact()}\tcorr-{rng.randrange(200_000)}\ttranscript"
          f"\tartifacts/bench/{i}\ttext/plain\t1024\t\t\t{when()}\t{now}\n"
          for i in range(COUNTS["artifact"])))  # fmt: skip
    conn.execute("ANALYZE")
    print(
        f"seeded {sum(COUNTS.values()):,} records for {CONTACTS:,} contacts in {time.monotonic() - started:.0f}s"
    )


def copy(conn, table: str, columns: str, rows) -> None:
    """COPY in chunks of text rows (much faster than one write_row call per row)."""
    with conn.cursor() as cur, cur.copy(f"COPY {table} ({columns}) FROM STDIN") as out:
        buffer = io.StringIO()
        for n, row in enumerate(rows, 1):
            buffer.write(row)
            if n % 50_000 == 0:
                out.write(buffer.getvalue())
                buffer = io.StringIO()
        out.write(buffer.getvalue())


def timed(fn, sample) -> list[float]:
    for cid in sample[:50]:  # warm caches and connections
        fn(cid)
    times = []
    for cid in sample:
        t = time.perf_counter()
        fn(cid)
        times.append((time.perf_counter() - t) * 1000)
    return times


def time_raw_and_selector(conn, sample) -> tuple[list[float], list[float], int]:
    """Both levels on the same contacts, alternating (and alternating who goes first), so
    machine noise and warm caches favour neither."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from dossiers.selectors import timeline_for_contact

    def raw(cid):
        rows = conn.execute(RAW_SQL, {"c": cid, "n": PAGE + 1, "page": PAGE + 1}).fetchall()
        assert len(rows) == PAGE + 1

    def selector(cid):
        page = timeline_for_contact(contact_id=cid, page_size=PAGE)
        assert len(page.entries) == PAGE

    for cid in sample[:50]:  # warm caches, connections and prepared plans
        raw(cid)
        selector(cid)
    raw_times, selector_times = [], []
    for i, cid in enumerate(sample):
        pair = ((raw, raw_times), (selector, selector_times))
        for fn, times in pair if i % 2 else reversed(pair):  # whoever goes second finds the rows warm
            t = time.perf_counter()
            fn(cid)
            times.append((time.perf_counter() - t) * 1000)
    with CaptureQueriesContext(connection) as ctx:
        selector(sample[0])
    return raw_times, selector_times, len(ctx.captured_queries)


def count_api_queries(contact_id) -> list[str]:
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from orchestrator.api.auth import api_key_create

    key = api_key_create(name="bench-dossier-count", contacts="read")[1]
    client = Client(HTTP_AUTHORIZATION=f"Api-Key {key}")
    client.get(f"/api/contacts/{contact_id}/timeline/")  # the key's last_used_at update happens once
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(f"/api/contacts/{contact_id}/timeline/")
    assert response.status_code == 200 and len(response.json()["results"]) == PAGE
    return [_describe(q["sql"]) for q in ctx.captured_queries]


def _describe(sql: str) -> str:
    if "UNION ALL" in sql:
        return "SELECT … UNION ALL over message, email, call, artifact (the page)"
    return sql[:90]


def time_api(base: str, key: str, sample) -> tuple[list[float], list[float]]:
    """The timeline request and, alternately, the bare Django JSON view of bench/urls.py
    (the server's floor on this machine at this moment)."""
    import requests

    session = requests.Session()
    session.headers["Authorization"] = f"Api-Key {key}"

    def timeline(cid):
        response = session.get(f"{base}/api/contacts/{cid}/timeline/", timeout=10)
        assert response.status_code == 200, response.text
        assert len(response.json()["results"]) == PAGE

    def bare(cid):
        assert session.get(f"{base}/bench/bare", timeout=10).status_code == 200

    for cid in sample[:50]:
        timeline(cid)
        bare(cid)
    api_times, bare_times = [], []
    for cid in sample:
        for fn, times in ((timeline, api_times), (bare, bare_times)):
            t = time.perf_counter()
            fn(cid)
            times.append((time.perf_counter() - t) * 1000)
    return api_times, bare_times


def pct(values: list[float], p: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


if __name__ == "__main__":
    main()
