"""Production shape: items posted to gunicorn, the digest flushed by its ETA message in a real
Celery worker (no beat runs here, so the sweep cannot be what sent it), the one SMS sent to the
simulated Twilio, whose signed callbacks finish it."""

from __future__ import annotations

from datetime import timedelta

import pytest
import requests

from agents.common.models import WebhookEvent
from dossiers.models import Contact, Message
from orchestrator.api.auth import api_key_create
from orchestrator.models import Digest, RoutingRule, Task
from orchestrator.states import TaskStatus
from tests.support.services import (
    celery_worker,
    platform_env,
    redis_server,
    transactional_db,
    wait_until,
    web_server,
)

S = TaskStatus
pytestmark = [transactional_db, pytest.mark.services]
WINDOW = 4


def test_a_real_worker_flushes_the_digest_when_its_window_ends():
    key = api_key_create(name="digests")[1]
    RoutingRule.objects.all().delete()
    RoutingRule.objects.create(name="sms", task_types=["notify"], channels=["sms"])
    ada = Contact.objects.create(name="Ada", phone="+14155550149", timezone="UTC")
    with redis_server() as (redis_url, _, _):
        env = platform_env(REDIS_URL=redis_url)
        with (
            web_server(env) as base,
            celery_worker({**env, "PUBLIC_BASE_URL": base}, queues="orchestrator,messaging"),
        ):
            ids = []
            for n in range(3):
                response = requests.post(f"{base}/api/tasks/", headers={"Authorization": f"Api-Key {key}"}, json={
                    "type": "notify", "contact": str(ada.id),
                    "payload": {"body": f"Order {1042 + n} shipped", "digest": {"key": "orders", "window_seconds": WINDOW}},
                }, timeout=30)  # fmt: skip
                assert response.status_code == 201, response.text
                ids.append(response.json()["id"])
            digest = wait_until(lambda: Digest.objects.filter(status="sent").first(), timeout=WINDOW + 20,
                                message="the digest to be sent")  # fmt: skip
            sms = wait_until(lambda: Task.objects.filter(type="sms.send", status=S.SUCCEEDED).first(), timeout=30,
                             message="the digest's SMS to be delivered")  # fmt: skip
            message_task = wait_until(lambda: Task.objects.filter(id=digest.task_id, status=S.SUCCEEDED).first(),
                                      timeout=20, message="the digest's notify task to succeed")  # fmt: skip
    assert (digest.item_count, digest.flushed_by) == (3, "eta")
    assert digest.closes_at - digest.opens_at == timedelta(seconds=WINDOW)
    # Sent when the window ended, by its ETA message: not before (a loaded machine may be a few
    # seconds late; no beat runs here, so no sweep could have sent it).
    assert digest.closes_at <= digest.flushed_at < digest.closes_at + timedelta(seconds=10)
    assert sms.parent_id == message_task.id
    (message,) = Message.objects.filter(contact=ada, direction="outbound")
    assert message.body == "3 updates:\n- Order 1042 shipped\n- Order 1043 shipped\n- Order 1044 shipped"
    assert message.provider_sid == sms.provider_id
    # The simulated Twilio had the message: its signed callbacks for that SID reached the webhook.
    assert (
        WebhookEvent.objects.filter(kind="messaging_status", payload__MessageSid=sms.provider_id).count() >= 3
    )
    assert Task.objects.filter(type="sms.send").count() == 1
    for task in Task.objects.filter(id__in=ids):
        assert task.status == S.SUCCEEDED
        assert task.result["digest"]["task"] == str(message_task.id)
