"""Sends whose status callbacks never come are finished from the provider's answer within their age.

The fake Twilio accepts three SMS through the real twilio SDK and sends no callback at all (an
outage longer than Twilio's retries). Twilio's own record then says: the first delivered, the
second undelivered (30003), the third is unknown to it. With STATUS_CHECK_AGE_SECONDS=sms=3,
gunicorn, a worker and beat as deployed, the sweeper asks Twilio (GET /Messages/{sid}.json)
and each task ends as Twilio says — succeeded, failed 30003, failed not_found_at_provider —
within the age and a sweep, the dossier messages agreeing.
"""

from __future__ import annotations

import time

import pytest
import requests

from dossiers.models import Message
from orchestrator.api.auth import api_key_create
from orchestrator.models import Task
from orchestrator.states import TaskStatus
from tests.fakes.twilio import FakeTwilio
from tests.faults.support import celery_beat
from tests.support.services import (
    celery_worker,
    platform_env,
    redis_server,
    transactional_db,
    wait_until,
    web_server,
)

S = TaskStatus
ACCOUNT = "AC" + "3" * 32
TOKEN = "3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c"
AGE = 3
pytestmark = [transactional_db, pytest.mark.faults, pytest.mark.services, pytest.mark.worker]


def test_sends_without_callbacks_are_finished_from_twilios_answer(tmp_path):
    fake = FakeTwilio(account_sid=ACCOUNT, auth_token=TOKEN).start()
    key = api_key_create(name="faults")[1]
    try:
        with redis_server() as (redis_url, _, _):
            env = platform_env(REDIS_URL=redis_url, TWILIO_ACCOUNT_SID=ACCOUNT, TWILIO_AUTH_TOKEN=TOKEN,
                               TWILIO_API_BASE_URL=fake.base_url, TWILIO_SMS_FROM="+15005550006",
                               MESSAGING_RATE_PER_SECOND="0", API_THROTTLE_RATE="0",
                               STATUS_CHECK_AGE_SECONDS=f"sms={AGE}", TASK_SWEEP_INTERVAL_SECONDS="1")  # fmt: skip
            with web_server(env) as base, celery_beat(env, str(tmp_path)):
                env["PUBLIC_BASE_URL"] = base
                with celery_worker(env, queues="orchestrator,messaging", log_path=tmp_path / "worker.log"):
                    ids = []
                    for n in range(3):
                        response = requests.post(f"{base}/api/tasks/", timeout=30,
                                                 headers={"Authorization": f"Api-Key {key}"},
                                                 json={"type": "sms.send", "payload": {"to": f"+1415555{n:04d}", "body": "lost"}})  # fmt: skip
                        assert response.status_code == 201, response.text
                        ids.append(response.json()["id"])
                    wait_until(lambda: Task.objects.filter(id__in=ids, status=S.IN_PROGRESS).count() == 3,
                               timeout=60, message="every send to be accepted")  # fmt: skip
                    accepted = time.monotonic()
                    by_to = {m["to"]: m for m in fake.messages}
                    by_to["+14155550000"]["status"] = "delivered"
                    by_to["+14155550001"].update(status="undelivered", error_code=30003)
                    fake.messages.remove(by_to["+14155550002"])  # Twilio has no record of it
                    wait_until(lambda: not Task.objects.filter(id__in=ids, status=S.IN_PROGRESS).exists(),
                               timeout=AGE + 20, interval=0.2, message="every lost send to be finished")  # fmt: skip
                    took = time.monotonic() - accepted
        first, second, third = (Task.objects.get(id=i) for i in ids)
        assert (first.status, first.error_code) == (S.SUCCEEDED, "")
        assert (second.status, second.error_code) == (S.FAILED, "30003")
        assert (third.status, third.error_code) == (S.FAILED, "not_found_at_provider")
        assert Message.objects.get(task=first).status == "delivered"
        assert Message.objects.get(task=second).status == "undelivered"
        fetched = {
            r.path.rsplit("/", 1)[1] for r in fake.requests if r.method == "GET" and "/Messages/SM" in r.path
        }
        assert fetched >= {f"{first.provider_id}.json", f"{second.provider_id}.json"}
        assert took < AGE + 10, f"finished {took:.1f}s after the sends were accepted"
        assert first.events.filter(to_status=S.SUCCEEDED, actor__contains="status check").exists()
    finally:
        fake.stop()
    print(f"finished {took:.1f}s after acceptance (age {AGE}s)")
