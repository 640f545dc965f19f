"""PostgreSQL restarted while Twilio status callbacks arrive (a private PostgreSQL).

A private server (initdb + pg_ctl on its own port; the machine's shared one is untouched)
holds the platform's database; gunicorn serves it. Twenty SMS are sent through the real
twilio SDK to the fake Twilio; then their status callbacks (queued, sent, delivered, each
posted twice, as Twilio does when an answer is lost) arrive from 4 threads while the server
is stopped and started again. The senders behave like Twilio with the connection override
``#rc=3&rp=all`` the platform appends: a failed request (5xx, reset, timeout) is retried; the
outage is kept shorter than those retries (here up to 10, 0.5 s apart, to absorb the restart
on a slow machine).

Afterwards: every task succeeded, each (message, status) was stored once, each task has one
``succeeded`` event, and every dossier message says ``delivered``.
"""

from __future__ import annotations

import random
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
import requests
from twilio.request_validator import RequestValidator

from tests.fakes.twilio import FakeTwilio
from tests.faults.support import pg_start, pg_stop, postgres_server
from tests.support.services import BIN, ROOT, platform_env, wait_until, web_server

ACCOUNT = "AC" + "9" * 32
TOKEN = "9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c9c"
MESSAGES = 20
pytestmark = [pytest.mark.faults, pytest.mark.services]


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([str(BIN / "python"), "manage.py", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_callbacks_during_a_postgres_restart_are_absorbed_once(tmp_path):
    fake = FakeTwilio(account_sid=ACCOUNT, auth_token=TOKEN).start()
    with postgres_server() as (admin_url, port, datadir):
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute("CREATE DATABASE comms")
        db_url = f"postgres://postgres@127.0.0.1:{port}/comms"
        env = platform_env(DATABASE_URL=db_url, TWILIO_ACCOUNT_SID=ACCOUNT, TWILIO_AUTH_TOKEN=TOKEN,
                           TWILIO_API_BASE_URL=fake.base_url, TWILIO_SMS_FROM="+15005550006",
                           MESSAGING_RATE_PER_SECOND="0", API_THROTTLE_RATE="0", DB_CONN_MAX_AGE="60")  # fmt: skip
        env.pop("REDIS_URL", None)
        manage(env, "migrate", "--no-input")
        key = next(
            line for line in manage(env, "create_api_key", "faults").splitlines() if line.startswith("cp_")
        )
        with web_server(env) as base:
            auth = {"Authorization": f"Api-Key {key}"}
            task_ids = []
            for n in range(MESSAGES):
                response = requests.post(f"{base}/api/tasks/", headers=auth, timeout=30, json={
                    "type": "sms.send", "payload": {"to": f"+1415555{n:04d}", "body": f"message {n}"}})  # fmt: skip
                assert response.status_code == 201, response.text
                task_ids.append(response.json()["id"])
            wait_until(lambda: len(fake.messages) == MESSAGES, message="every send to reach Twilio")
            sid_of = {m["to"]: m["sid"] for m in fake.messages}
            callbacks = []
            for n, task_id in enumerate(task_ids):
                sid = sid_of[f"+1415555{n:04d}"]
                for status in ("queued", "sent", "delivered"):
                    callbacks += [(task_id, sid, status)] * 2
            random.Random(9).shuffle(callbacks)
            outcomes: list[int] = []

            def deliver(item: tuple[str, str, str]) -> None:
                task_id, sid, status = item
                url = f"{base}/webhooks/twilio/messaging/status/?task={task_id}"
                params = {"MessageSid": sid, "SmsSid": sid, "MessageStatus": status, "SmsStatus": status,
                          "AccountSid": ACCOUNT, "ApiVersion": "2010-04-01"}  # fmt: skip
                signature = RequestValidator(TOKEN).compute_signature(url, params)
                for _ in range(11):  # the first try and up to 10 retries
                    try:
                        response = requests.post(url, data=params, timeout=5,
                                                 headers={"X-Twilio-Signature": signature})  # fmt: skip
                        outcomes.append(response.status_code)
                        if response.status_code < 500:
                            assert response.status_code in (200, 204), response.text
                            return
                    except requests.RequestException:
                        outcomes.append(0)
                    time.sleep(0.5)
                raise AssertionError(f"callback {status} for {task_id} never accepted")

            with ThreadPoolExecutor(4) as pool:
                futures = [pool.submit(deliver, item) for item in callbacks]
                time.sleep(0.3)
                pg_stop(datadir)
                time.sleep(1.5)
                pg_start(datadir, port)
                for future in futures:
                    future.result(timeout=60)
            with psycopg.connect(db_url) as conn:
                check(conn, task_ids)
    fake.stop()
    # The outage was felt (some requests failed and were retried), and absorbed:
    assert any(code == 0 or code >= 500 for code in outcomes)
    assert outcomes.count(200) + outcomes.count(204) == len(callbacks)


def check(conn, task_ids: list[str]) -> None:
    statuses = conn.execute("SELECT status, count(*) FROM orchestrator_task GROUP BY status").fetchall()
    assert statuses == [("succeeded", MESSAGES)]
    stored = conn.execute(
        "SELECT count(*), count(DISTINCT dedupe_key) FROM agents_common_webhookevent WHERE provider = 'twilio'"
    ).fetchone()
    assert stored == (MESSAGES * 3, MESSAGES * 3)
    succeeded = conn.execute(
        "SELECT task_id, count(*) FROM orchestrator_taskevent WHERE to_status = 'succeeded' GROUP BY task_id"
    ).fetchall()
    assert len(succeeded) == MESSAGES and {n for _, n in succeeded} == {1}
    messages = conn.execute("SELECT status, count(*) FROM dossiers_message GROUP BY status").fetchall()
    assert messages == [("delivered", MESSAGES)]
