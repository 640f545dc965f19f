"""The console's CSV upload on the production path: gunicorn serving the admin, a real Celery
worker, PostgreSQL, a private Redis, and the fake Twilio (the real ``twilio`` SDK talks to it)
recording what it received.

A supervisor signs in, uploads a CSV with bad rows, reads the preview (each bad row with its
line and reason), and confirms. Nothing exists before the confirmation; afterwards the worker
sends, and Twilio receives exactly the good rows — once each, with their own variables.
"""

from __future__ import annotations

import csv
import io
import os
import re
import signal
from collections import Counter
from contextlib import contextmanager
from datetime import timedelta
from html import unescape

import psycopg
import pytest
import requests
from django.contrib.auth.models import Group
from django.db import connection
from django.utils import timezone

from broadcasts.models import Broadcast, Recipient
from tests.fakes.twilio import FakeTwilio
from tests.faults.support import children_of
from tests.support.services import (
    celery_worker,
    platform_env,
    redis_server,
    transactional_db,
    wait_until,
    web_server,
)

ACCOUNT = "AC" + "c" * 32
TOKEN = "c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5"
PASSWORD = "pw-sue-long-enough-1"
pytestmark = [transactional_db, pytest.mark.services, pytest.mark.worker]

CSV = (
    b"\xef\xbb\xbfphone,first_name\r\n"
    b"+14155550201,Ann\r\n"  # 2
    b"not a number,Bob\r\n"  # 3
    b"+14155550202,Cy\r\n"  # 4
    b"+14155550201,Ann twice\r\n"  # 5
    b",Dee\r\n"  # 6
    b"+14155550203,\r\n"  # 7: the body needs first_name
    b"+14155550204,Eve,oops\r\n"  # 8
    b"+14155550205,Fay\r\n"  # 9
)
GOOD = {"+14155550201": "Ann", "+14155550202": "Cy", "+14155550205": "Fay"}
BAD = {3: "bad phone number", 5: "duplicate of line 2", 6: "missing address", 7: "missing variable(s): first_name",
       8: "too many columns (3; the header has 2)"}  # fmt: skip


def sign_in(base: str, username: str) -> requests.Session:
    session = requests.Session()
    page = session.get(f"{base}/admin/login/", timeout=30)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    done = session.post(f"{base}/admin/login/?next=/admin/", timeout=30, allow_redirects=False,
                        data={"csrfmiddlewaretoken": token, "username": username, "password": PASSWORD})  # fmt: skip
    assert done.status_code == 302, done.text[:500]
    return session


def csrf(session: requests.Session, url: str) -> str:
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', session.get(url, timeout=30).text).group(
        1
    )


def test_a_csv_with_bad_rows_sends_exactly_the_good_ones_and_nothing_before_confirm(
    tmp_path, django_user_model
):
    sue = django_user_model.objects.create_user("sue", password=PASSWORD, is_staff=True)
    sue.groups.add(Group.objects.get(name="supervisor"))  # the role migration's group
    fake = FakeTwilio(account_sid=ACCOUNT, auth_token=TOKEN).start()
    try:
        with redis_server() as (redis_url, _, _):
            env = platform_env(REDIS_URL=redis_url, TWILIO_ACCOUNT_SID=ACCOUNT, TWILIO_AUTH_TOKEN=TOKEN,
                               TWILIO_API_BASE_URL=fake.base_url, TWILIO_SMS_FROM="+15005550006",
                               MESSAGING_RATE_PER_SECOND="0")  # fmt: skip
            with web_server(env) as base, celery_worker(env, queues="messaging", log_path=tmp_path / "w.log"):
                session = sign_in(base, "sue")
                new = f"{base}/admin/broadcasts/new/"
                preview = session.post(new, timeout=60, files={"file": ("customers.csv", CSV, "text/csv")}, data={
                    "csrfmiddlewaretoken": csrf(session, new), "action": "preview", "name": "Spring sale",
                    "channel": "sms", "body": "Hi {{ first_name }}, spring is here",
                })  # fmt: skip
                assert preview.status_code == 200, preview.text[:2000]
                rows = re.findall(
                    r'<tr data-line="(\d+)"><td>\d+</td><td>[^<]*</td><td>([^<]*)</td>', preview.text
                )
                reported = {int(line): unescape(reason) for line, reason in rows}
                assert sorted(reported) == sorted(BAD)
                assert all(reported[line].startswith(reason) for line, reason in BAD.items()), reported
                assert "Hi Ann, spring is here" in preview.text
                # Previewed, not created: no row, and nothing reached Twilio.
                assert (Broadcast.objects.count(), Recipient.objects.count(), len(fake.posts())) == (0, 0, 0)

                token = re.search(r'name="token" value="([^"]+)"', preview.text).group(1)
                confirmed = session.post(new, timeout=60, allow_redirects=False, data={
                    "csrfmiddlewaretoken": csrf(session, new), "action": "confirm", "token": token})  # fmt: skip
                assert confirmed.status_code == 302, confirmed.text[:2000]
                broadcast = Broadcast.objects.get()
                assert confirmed.headers["Location"] == f"/admin/broadcasts/{broadcast.pk}/"
                wait_until(lambda: Broadcast.objects.get().status == "completed", timeout=60, interval=0.2,
                           message="the worker to send the broadcast")  # fmt: skip

                received = Counter(post.form["To"][0] for post in fake.posts())
                assert received == Counter(GOOD.keys())  # exactly the good rows, once each
                bodies = {post.form["To"][0]: post.form["Body"][0] for post in fake.posts()}
                assert bodies == {to: f"Hi {name}, spring is here" for to, name in GOOD.items()}
                results = session.get(f"{base}/admin/broadcasts/{broadcast.pk}/recipients.csv", timeout=30)
                table = list(csv.DictReader(io.StringIO(results.text)))
                assert {r["address"]: r["status"] for r in table} == dict.fromkeys(GOOD, "sent")
                # Each result names its line of the operator's file.
                assert {r["address"]: int(r["line"]) for r in table} == {
                    "+14155550201": 2, "+14155550202": 4, "+14155550205": 9}  # fmt: skip
                assert {r["provider_id"] for r in table} == {m["sid"] for m in fake.messages}
                watch = session.get(f"{base}/admin/broadcasts/{broadcast.pk}/", timeout=30).text
                assert 'id="cc-bc-percent">100 %<' in watch and 'data-count="sent">3<' in watch
    finally:
        fake.stop()


def test_a_worker_killed_in_the_middle_of_an_import_loses_nothing_and_creates_nothing_twice(
    tmp_path, django_user_model
):
    """12,000 rows (three INSERTs of 5,000). The test holds an uncommitted row with the address of
    row 7,001, so the import's second INSERT waits on it, the first 5,000 rows inserted and not
    committed; the worker's pool process is SIGKILLed there (the OOM killer's choice: the process
    holding 100,000 rows). The task acks late and is requeued on a lost worker: the new pool
    process imports again, from the stored upload, and every row is there exactly once."""
    sue = django_user_model.objects.create_user("sue", password=PASSWORD, is_staff=True)
    sue.groups.add(Group.objects.get(name="supervisor"))
    numbers = [f"+1415{5550000 + i:07d}" for i in range(12_000)]
    data = ("phone,first_name\r\n" + "".join(f"{n},P{i}\r\n" for i, n in enumerate(numbers))).encode()
    with redis_server() as (redis_url, _, _):
        env = platform_env(REDIS_URL=redis_url, MESSAGING_RATE_PER_SECOND="0")
        with (
            web_server(env) as base,
            celery_worker(env, queues="messaging", log_path=tmp_path / "w.log") as worker,
        ):
            session = sign_in(base, "sue")
            new = f"{base}/admin/broadcasts/new/"
            later = (timezone.now() + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")  # scheduled: nothing sent
            preview = session.post(new, timeout=120, files={"file": ("big.csv", data, "text/csv")}, data={
                "csrfmiddlewaretoken": csrf(session, new), "action": "preview", "name": "Big",
                "channel": "sms", "body": "Hi {{ first_name }}", "scheduled_for": later,
            })  # fmt: skip
            assert preview.status_code == 200, preview.text[:2000]
            token = re.search(r'name="token" value="([^"]+)"', preview.text).group(1)
            with blocking_row(numbers[7_000]) as hold:
                confirmed = session.post(new, timeout=60, allow_redirects=False, data={
                    "csrfmiddlewaretoken": csrf(session, new), "action": "confirm", "token": token})  # fmt: skip
                assert confirmed.status_code == 302, confirmed.text[:2000]
                broadcast = Broadcast.objects.get()
                assert broadcast.status == "importing"
                hold(broadcast.pk)
                wait_until(import_waits_on_the_lock, timeout=60, message="the import to reach row 7,001")
                [pool] = children_of(worker.pid)
                os.kill(pool, signal.SIGKILL)
                wait_until(
                    lambda: pool not in children_of(worker.pid), timeout=10, message="the pool process gone"
                )
            # The held row is rolled back; the requeued task imports everything, once.
            wait_until(lambda: Broadcast.objects.get().status == "scheduled", timeout=120, interval=0.5,
                       message="the import to run again and finish")  # fmt: skip
    broadcast = Broadcast.objects.get()
    assert broadcast.total == 12_000 and Recipient.objects.filter(broadcast=broadcast).count() == 12_000
    assert sorted(Recipient.objects.values_list("address", flat=True)) == sorted(numbers)
    assert "WorkerLostError" in (tmp_path / "w.log").read_text()  # it really died mid-import


@contextmanager
def blocking_row(address: str):
    """A second database connection that, once given the broadcast, inserts an uncommitted
    recipient row with ``address``: an INSERT of the same (broadcast, address) waits for it."""
    params = connection.get_connection_params()
    with psycopg.connect(**params, autocommit=False) as conn:

        def hold(broadcast_id) -> None:
            conn.execute(
                "INSERT INTO broadcasts_recipient (broadcast_id, line, address, variables) VALUES (%s, 1, %s, '{}')",
                [broadcast_id, address],
            )

        try:
            yield hold
        finally:
            conn.rollback()


def import_waits_on_the_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND query LIKE 'INSERT INTO \"broadcasts_recipient\"%%'"
        )
        return cursor.fetchone()[0] > 0
