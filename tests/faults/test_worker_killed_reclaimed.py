"""A whole worker SIGKILLed mid-send is reclaimed within 60 s, and the message is sent once.

The fake Twilio accepts the send and holds its answer. With the shipped defaults (a 20 s lease
renewed while the task runs, beat sweeping every 15 s) the worker and its pool process are
killed in that window and a second worker is started, as a deploy or an OOM kill would leave
things; the task must be reclaimed within 60 s of the kill (not the old 360 s lease) and
finish with the SID Twilio already gave (one send). A first test shows that the short lease
is renewed: a live worker held on Twilio for three leases keeps its task (nobody retakes it).
"""

from __future__ import annotations

import time

import pytest
import requests

from agents.messaging.models import SendAttempt
from orchestrator.api.auth import api_key_create
from orchestrator.models import Task, TaskEvent
from orchestrator.states import TaskStatus
from tests.fakes.twilio import FakeTwilio
from tests.faults.support import celery_beat, sigkill_tree
from tests.support.services import (
    celery_worker,
    platform_env,
    redis_server,
    transactional_db,
    wait_until,
    web_server,
)

S = TaskStatus
ACCOUNT = "AC" + "6" * 32
TOKEN = "6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f"
pytestmark = [transactional_db, pytest.mark.faults, pytest.mark.services, pytest.mark.worker]


def _send(base: str, key: str, to: str) -> str:
    response = requests.post(f"{base}/api/tasks/", timeout=30, headers={"Authorization": f"Api-Key {key}"},
                             json={"type": "sms.send", "payload": {"to": to, "body": "once"}})  # fmt: skip
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _reclaims(task_id: str) -> int:
    return TaskEvent.objects.filter(task_id=task_id, details__has_key="reclaimed").count()


def _run(
    tmp_path, lease: str | None, sweep_every: str | None, hold_alive: float
) -> tuple[str, float, FakeTwilio]:
    fake = FakeTwilio(account_sid=ACCOUNT, auth_token=TOKEN, hold=True).start()
    key = api_key_create(name="faults")[1]
    overrides = {"TASK_LEASE_SECONDS": lease, "TASK_SWEEP_INTERVAL_SECONDS": sweep_every}
    try:
        with redis_server() as (redis_url, _, _):
            env = platform_env(REDIS_URL=redis_url, TWILIO_ACCOUNT_SID=ACCOUNT, TWILIO_AUTH_TOKEN=TOKEN,
                               TWILIO_API_BASE_URL=fake.base_url, TWILIO_SMS_FROM="+15005550006",
                               MESSAGING_RATE_PER_SECOND="0", API_THROTTLE_RATE="0", TASK_SWEEP_AGE_SECONDS="5",
                               **{k: v for k, v in overrides.items() if v})  # fmt: skip
            with web_server(env) as base, celery_beat(env, str(tmp_path)):
                env["PUBLIC_BASE_URL"] = base
                task_id = _send(base, key, "+14155550123")
                # Two pool processes: a free one would take the task if its lease ran out.
                with celery_worker(
                    env, queues="orchestrator,messaging", concurrency=2, log_path=tmp_path / "w1.log"
                ) as first:
                    assert fake.holding.wait(30), "the worker never reached Twilio"
                    time.sleep(hold_alive)  # alive and renewing: nobody may retake the task
                    assert _reclaims(task_id) == 0 and len(fake.posts()) == 1
                    sigkill_tree(first)
                    killed = time.monotonic()
                fake.release.set()
                fake.hold = False
                with celery_worker(env, queues="orchestrator,messaging", log_path=tmp_path / "w2.log"):
                    wait_until(lambda: Task.objects.get(id=task_id).status == S.IN_PROGRESS, timeout=90,
                               interval=0.2, message="the killed worker's task to be reclaimed")  # fmt: skip
                    reclaimed_after = time.monotonic() - killed
    finally:
        fake.release.set()
        fake.stop()
    return task_id, reclaimed_after, fake


def _sent_once(task_id: str, fake: FakeTwilio) -> None:
    assert len(fake.posts()) == 1  # Twilio saw the send once
    task = Task.objects.get(id=task_id)
    assert task.provider_id == fake.messages[0]["sid"]
    assert _reclaims(task_id) == 1
    outcomes = list(SendAttempt.objects.filter(task_id=task_id).values_list("outcome", flat=True))
    assert outcomes == [SendAttempt.Outcome.ACCEPTED]


def test_a_live_worker_keeps_its_task_past_three_leases(tmp_path):
    task_id, _, fake = _run(tmp_path, lease="2", sweep_every="1", hold_alive=6.5)
    _sent_once(task_id, fake)


def test_a_killed_worker_is_reclaimed_within_60s_with_the_defaults(tmp_path):
    task_id, reclaimed_after, fake = _run(tmp_path, lease=None, sweep_every=None, hold_alive=0)
    assert reclaimed_after < 60, f"reclaimed {reclaimed_after:.1f}s after the kill"
    _sent_once(task_id, fake)
    print(f"reclaimed {reclaimed_after:.1f}s after the kill")
