"""Redis stopped while Twilio status callbacks and an inbound MMS arrive (a private Redis).

Five SMS are sent through the real twilio SDK to the fake Twilio (gunicorn, a Celery worker and
beat, as deployed). Then the private Redis is stopped; while it is down, every send's ``sent``
and ``delivered`` callbacks and an inbound MMS with one picture are posted, signed, to gunicorn,
and the read-only endpoints are asked. Every callback must answer 2xx (the event is stored; the
work after it waits), ``/api/agents/`` must not answer 5xx, ``/readyz`` says 503 naming redis.
Redis is started again (empty, as after a restart without persistence) and beat's periodic jobs
finish the work: every task ``succeeded``, every dossier message ``delivered``, and the MMS's
picture fetched from Twilio and stored as an artifact. Nothing is lost.
"""

from __future__ import annotations

import time
from urllib.parse import urlencode

import pytest
import requests
from twilio.request_validator import RequestValidator

from dossiers.models import Artifact, Message
from orchestrator.api.auth import api_key_create
from orchestrator.models import Task
from orchestrator.states import TaskStatus
from tests.fakes.twilio import FakeTwilio
from tests.faults.support import celery_beat
from tests.support.services import (
    celery_worker,
    platform_env,
    redis_server,
    stop_process,
    transactional_db,
    wait_until,
    web_server,
)

S = TaskStatus
ACCOUNT = "AC" + "5" * 32
TOKEN = "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e"
SENDS = 5
FORM = "application/x-www-form-urlencoded"
pytestmark = [transactional_db, pytest.mark.faults, pytest.mark.services, pytest.mark.worker]


def signed(url: str, params: dict) -> requests.Response:
    signature = RequestValidator(TOKEN).compute_signature(url, params)
    return requests.post(url, data=urlencode(params), timeout=15,
                         headers={"X-Twilio-Signature": signature, "Content-Type": FORM})  # fmt: skip


def test_callbacks_and_an_inbound_mms_while_redis_is_down_lose_nothing(tmp_path):
    fake = FakeTwilio(account_sid=ACCOUNT, auth_token=TOKEN).start()
    picture = fake.add_media("ME" + "1" * 32, b"\x89PNG a picture", "image/png")
    key = api_key_create(name="faults")[1]
    codes: list[int] = []
    try:
        with redis_server() as (redis_url, redis_port, redis_proc):
            env = platform_env(REDIS_URL=redis_url, TWILIO_ACCOUNT_SID=ACCOUNT, TWILIO_AUTH_TOKEN=TOKEN,
                               TWILIO_API_BASE_URL=fake.base_url, TWILIO_SMS_FROM="+15005550006",
                               MESSAGING_RATE_PER_SECOND="0", API_THROTTLE_RATE="0",
                               TASK_SWEEP_INTERVAL_SECONDS="2", TASK_SWEEP_AGE_SECONDS="2",
                               STATUS_DRAIN_INTERVAL_SECONDS="2", MEDIA_PICKUP_INTERVAL_SECONDS="2",
                               HEARTBEAT_INTERVAL_SECONDS="1")  # fmt: skip
            with web_server(env) as base:
                env["PUBLIC_BASE_URL"] = base
                with (
                    celery_worker(env, queues="orchestrator,messaging", log_path=tmp_path / "worker.log"),
                    celery_beat(env, str(tmp_path)),
                ):
                    ids = []
                    for n in range(SENDS):
                        response = requests.post(f"{base}/api/tasks/", timeout=30,
                                                 headers={"Authorization": f"Api-Key {key}"},
                                                 json={"type": "sms.send", "payload": {"to": f"+1415555{n:04d}", "body": f"hi {n}"}})  # fmt: skip
                        assert response.status_code == 201, response.text
                        ids.append(response.json()["id"])
                    wait_until(lambda: Task.objects.filter(id__in=ids, status=S.IN_PROGRESS).count() == SENDS,
                               timeout=60, message="every send to be accepted by Twilio")  # fmt: skip
                    sids = {m["to"]: m["sid"] for m in fake.messages}

                    stop_process(redis_proc)  # Redis down
                    for n, task_id in enumerate(ids):
                        sid = sids[f"+1415555{n:04d}"]
                        for status in ("sent", "delivered"):
                            url = f"{base}/webhooks/twilio/messaging/status/?task={task_id}"
                            params = {"MessageSid": sid, "MessageStatus": status, "AccountSid": ACCOUNT}
                            codes.append(signed(url, params).status_code)
                    inbound = {"MessageSid": "MM" + "2" * 32, "AccountSid": ACCOUNT, "From": "+14155550199",
                               "To": "+15005550006", "Body": "look", "NumMedia": "1", "NumSegments": "1",
                               "MediaUrl0": picture, "MediaContentType0": "image/png"}  # fmt: skip
                    codes.append(signed(f"{base}/webhooks/twilio/messaging/inbound/", inbound).status_code)
                    agents = requests.get(f"{base}/api/agents/", headers={"Authorization": f"Api-Key {key}"},
                                          timeout=15)  # fmt: skip
                    ready = requests.get(f"{base}/readyz", timeout=15)
                    assert all(200 <= code < 300 for code in codes), codes
                    assert agents.status_code < 500, agents.text
                    if agents.status_code == 200:
                        assert all("redis" in row["error"] for row in agents.json()["results"])
                    assert ready.status_code == 503 and "redis" in ready.json()["failed"]
                    time.sleep(3)

                    with redis_server(port=redis_port):  # back, empty
                        wait_until(lambda: Task.objects.filter(id__in=ids, status=S.SUCCEEDED).count() == SENDS,
                                   timeout=60, interval=0.5, message="every send to succeed")  # fmt: skip
                        wait_until(lambda: Artifact.objects.filter(kind="media", source_url=picture).exists(),
                                   timeout=60, interval=0.5, message="the MMS picture to be fetched")  # fmt: skip
        outbound = Message.objects.filter(direction="outbound")
        assert sorted(outbound.values_list("status", flat=True)) == ["delivered"] * SENDS
        mms = Message.objects.get(provider_sid=inbound["MessageSid"])
        artifact = Artifact.objects.get(kind="media", source_url=picture)
        assert mms.media[0]["artifact"] == str(artifact.id) and artifact.size == len(b"\x89PNG a picture")
        assert any(r.path.startswith("/media/") for r in fake.requests)
        assert Task.objects.filter(type="sms.inbound").count() == 1
    finally:
        fake.stop()
