"""A worker SIGKILLed while Twilio holds its send: the task completes and Twilio saw one send.

The fake Twilio accepts the message (stores it, as Twilio would once the request arrived)
and holds the answer; the test kills the worker and its pool process in that window — the
exact window docs/messaging.md describes, between Twilio's accept and our save of the SID.
The sweeper retakes the task once its lease runs out; the new worker finds the ``started``
send attempt, asks Twilio (Messages list) for a message to that number with that body since
the attempt began, finds it and records its SID instead of sending again.
"""

from __future__ import annotations

import pytest
import requests
from twilio.request_validator import RequestValidator

from agents.messaging.models import SendAttempt
from orchestrator.api.auth import api_key_create
from orchestrator.models import Task
from orchestrator.states import TaskStatus
from tests.fakes.twilio import FakeTwilio
from tests.faults.support import sigkill_tree, sweep
from tests.support.services import (
    celery_worker,
    platform_env,
    redis_server,
    transactional_db,
    wait_until,
    web_server,
)

S = TaskStatus
ACCOUNT = "AC" + "7" * 32
TOKEN = "fa17fa17fa17fa17fa17fa17fa17fa17"
pytestmark = [transactional_db, pytest.mark.faults, pytest.mark.services, pytest.mark.worker]


def test_worker_killed_between_twilio_accept_and_our_save(tmp_path):
    fake = FakeTwilio(account_sid=ACCOUNT, auth_token=TOKEN, hold=True).start()
    key = api_key_create(name="faults")[1]
    try:
        with redis_server() as (redis_url, _, _):
            env = platform_env(REDIS_URL=redis_url, TWILIO_ACCOUNT_SID=ACCOUNT, TWILIO_AUTH_TOKEN=TOKEN,
                               TWILIO_API_BASE_URL=fake.base_url, TWILIO_SMS_FROM="+15005550006",
                               MESSAGING_RATE_PER_SECOND="0", TASK_LEASE_SECONDS="2")  # fmt: skip
            with web_server(env) as base:
                env["PUBLIC_BASE_URL"] = base
                response = requests.post(f"{base}/api/tasks/", timeout=30, headers={"Authorization": f"Api-Key {key}"},
                                         json={"type": "sms.send", "payload": {"to": "+14155550123", "body": "kill me"}})  # fmt: skip
                assert response.status_code == 201, response.text
                task_id = response.json()["id"]
                with celery_worker(
                    env, queues="orchestrator,messaging", log_path=tmp_path / "w1.log"
                ) as first:
                    assert fake.holding.wait(30), "the worker never reached Twilio"
                    sigkill_tree(first)
                fake.release.set()
                fake.hold = False
                assert len(fake.posts()) == 1 and Task.objects.get(id=task_id).status == S.DISPATCHED
                attempt = SendAttempt.objects.get(task_id=task_id)
                assert attempt.outcome == SendAttempt.Outcome.STARTED  # the window: accepted, not saved
                with celery_worker(env, queues="orchestrator,messaging", log_path=tmp_path / "w2.log"):
                    wait_until(lambda: _swept_until(env, task_id, S.IN_PROGRESS), timeout=30, interval=0.5,
                               message="the swept task to be reconciled")  # fmt: skip
                    task = Task.objects.get(id=task_id)
                    assert task.provider_id == fake.messages[0]["sid"]
                    # Twilio's delivered callback finishes it.
                    url = f"{base}/webhooks/twilio/messaging/status/?task={task_id}"
                    params = {
                        "MessageSid": task.provider_id,
                        "MessageStatus": "delivered",
                        "AccountSid": ACCOUNT,
                    }
                    signature = RequestValidator(TOKEN).compute_signature(url, params)
                    callback = requests.post(
                        url, data=params, headers={"X-Twilio-Signature": signature}, timeout=30
                    )
                    assert callback.status_code in (200, 204)
                    wait_until(
                        lambda: _status(task_id) == S.SUCCEEDED, message="the callback to finish the task"
                    )
    finally:
        fake.release.set()
        fake.stop()
    assert len(fake.posts()) == 1  # Twilio saw the send once
    attempts = list(SendAttempt.objects.filter(task_id=task_id).values_list("outcome", "detail"))
    assert attempts == [(SendAttempt.Outcome.ACCEPTED, "recovered after a lost worker")]
    assert Task.objects.get(id=task_id).attempts == 2


def _swept_until(env: dict[str, str], task_id: str, status: str) -> bool:
    """Run the sweeper (it retakes the task once its lease ran out) until the task is there."""
    if _status(task_id) == status:
        return True
    sweep(env)
    return _status(task_id) == status


def _status(task_id: str) -> str:
    return Task.objects.values_list("status", flat=True).get(id=task_id)
