"""A provider that hangs stalls only its own channel: the worker pools of make run and render.yaml.

One Celery worker per pool of ``comms_platform/worker_pools.py`` (one process each, as
``make run`` starts them). The fake Twilio accepts SMS sends and never answers (a hung provider
call); three SMS are queued, so the messaging pool is stuck on the first. Meanwhile five e-mails
(test mode: the simulated SendGrid, its signed events posted back to gunicorn) must all be sent
and finished on time, and the SMS still be held: one hang, one channel.
"""

from __future__ import annotations

import time
from contextlib import ExitStack

import pytest
import requests

from comms_platform.worker_pools import POOLS
from orchestrator.api.auth import api_key_create
from orchestrator.models import Task
from orchestrator.states import TaskStatus
from tests.fakes.twilio import FakeTwilio
from tests.support.services import (
    celery_worker,
    platform_env,
    redis_server,
    transactional_db,
    wait_until,
    web_server,
)

S = TaskStatus
ACCOUNT = "AC" + "4" * 32
TOKEN = "4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d"
ON_TIME_SECONDS = 20
pytestmark = [transactional_db, pytest.mark.faults, pytest.mark.services, pytest.mark.worker]


def test_a_hung_twilio_stalls_messaging_only(tmp_path):
    assert {"voice", "messaging", "email"} <= set(POOLS.values()), "each channel needs its own pool"
    fake = FakeTwilio(account_sid=ACCOUNT, auth_token=TOKEN, hold=True).start()
    key = api_key_create(name="faults")[1]
    auth = {"Authorization": f"Api-Key {key}"}
    try:
        with redis_server() as (redis_url, _, _):
            env = platform_env(REDIS_URL=redis_url, TWILIO_ACCOUNT_SID=ACCOUNT, TWILIO_AUTH_TOKEN=TOKEN,
                               TWILIO_API_BASE_URL=fake.base_url, TWILIO_SMS_FROM="+15005550006",
                               MESSAGING_RATE_PER_SECOND="0", API_THROTTLE_RATE="0")  # fmt: skip
            with web_server(env) as base, ExitStack() as workers:
                env["PUBLIC_BASE_URL"] = base
                for pool, queues in POOLS.items():
                    workers.enter_context(
                        celery_worker(env, queues=queues, log_path=tmp_path / f"{pool}.log")
                    )
                sms = [
                    requests.post(f"{base}/api/tasks/", headers=auth, timeout=30,
                                  json={"type": "sms.send", "payload": {"to": f"+1415555{n:04d}", "body": "hang"}}).json()["id"]
                    for n in range(3)
                ]  # fmt: skip
                assert fake.holding.wait(30), "the messaging worker never reached Twilio"
                started = time.monotonic()
                emails = [
                    requests.post(f"{base}/api/tasks/", headers=auth, timeout=30,
                                  json={"type": "email.send", "payload": {"to": f"u{n}@example.org", "subject": "Hi",
                                                                          "text": "on time"}}).json()["id"]
                    for n in range(5)
                ]  # fmt: skip
                wait_until(lambda: Task.objects.filter(id__in=emails, status=S.SUCCEEDED).count() == 5,
                           timeout=ON_TIME_SECONDS, interval=0.2, message="every e-mail while Twilio hangs")  # fmt: skip
                took = time.monotonic() - started
                # The hang is still there: one SMS held at Twilio, the others waiting their turn.
                assert len(fake.posts()) == 1
                assert not Task.objects.filter(id__in=sms, status__in=[S.SUCCEEDED, S.FAILED]).exists()
                fake.release.set()
    finally:
        fake.release.set()
        fake.stop()
    print(f"5 e-mails finished in {took:.1f}s while Twilio hung")
