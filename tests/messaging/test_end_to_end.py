"""End to end in test mode through a running server: API → simulated Twilio → signed
callbacks to our own webhook → succeeded, for SMS and WhatsApp."""

import pytest
import requests
from twilio.request_validator import RequestValidator

from dossiers.models import Message
from orchestrator.api.auth import api_key_create
from orchestrator.models import Task
from orchestrator.states import TaskStatus
from tests.support.services import platform_env, transactional_db, wait_until, web_server

S = TaskStatus
TEST_MODE_TOKEN = "0123456789abcdef0123456789abcdef"  # given to the server (test mode generates its own)
pytestmark = [transactional_db, pytest.mark.services]


def finished(task_id: str) -> Task | None:
    task = Task.objects.get(id=task_id)
    return task if task.status in (S.SUCCEEDED, S.FAILED) else None


def create(base: str, key: str, body: dict) -> str:
    response = requests.post(
        f"{base}/api/tasks/", json=body, headers={"Authorization": f"Api-Key {key}"}, timeout=30
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_sms_ends_succeeded_with_history_and_dossier():
    key = api_key_create(name="e2e")[1]
    with web_server(platform_env()) as base:
        task_id = create(
            base, key, {"type": "sms.send", "payload": {"to": "+14155550123", "body": "Your code is 1234"}}
        )
        task = wait_until(lambda: finished(task_id), timeout=20, message="the task to finish")
        detail = requests.get(f"{base}/api/tasks/{task_id}/", headers={"Authorization": f"Api-Key {key}"},
                              timeout=10).json()  # fmt: skip
    assert task.status == S.SUCCEEDED, (task.error_code, task.error_message)
    assert task.provider_id.startswith("SM") and len(task.provider_id) == 34
    applied = [e["to_status"] for e in detail["events"] if e["applied"]]
    assert applied == ["routed", "queued", "dispatched", "in_progress", "succeeded"]
    assert any(e["actor"] == "webhook:twilio" for e in detail["events"])
    message = Message.objects.get(task_id=task_id)
    assert (message.provider_sid, message.status, message.body) == (
        task.provider_id,
        "delivered",
        "Your code is 1234",
    )


def test_sms_to_a_landline_ends_failed_with_30006():
    key = api_key_create(name="e2e")[1]
    with web_server(platform_env()) as base:
        task_id = create(base, key, {"type": "sms.send", "payload": {"to": "+14155550006", "body": "hi"}})
        task = wait_until(lambda: finished(task_id), timeout=20, message="the task to finish")
    assert (task.status, task.error_code) == (S.FAILED, "30006")


def test_whatsapp_reply_inside_the_window_ends_succeeded():
    key = api_key_create(name="e2e")[1]
    with web_server(platform_env(TWILIO_AUTH_TOKEN=TEST_MODE_TOKEN)) as base:
        url = f"{base}/webhooks/twilio/messaging/inbound/"
        params = {"MessageSid": "SM" + "e" * 32, "AccountSid": "AC" + "0" * 31 + "1", "From": "whatsapp:+14155550123",
                  "To": "whatsapp:+14155238886", "Body": "Hi, is my order ready?", "NumMedia": "0",
                  "ProfileName": "Ada", "WaId": "14155550123"}  # fmt: skip
        signature = RequestValidator(TEST_MODE_TOKEN).compute_signature(url, params)
        inbound = requests.post(url, data=params, headers={"X-Twilio-Signature": signature}, timeout=10)
        assert inbound.status_code == 200 and inbound.text.startswith("<?xml")
        task_id = create(base, key, {"type": "whatsapp.send",
                                     "payload": {"to": "+14155550123", "body": "Yes, ready for pick-up."}})  # fmt: skip
        task = wait_until(lambda: finished(task_id), timeout=20, message="the task to finish")
        read = wait_until(
            lambda: Message.objects.filter(task_id=task_id, status="read").first(), message="read"
        )
    assert task.status == S.SUCCEEDED, (task.error_code, task.error_message)
    message = Message.objects.get(id=read.id)
    assert (message.channel, message.to_address, message.status) == (
        "whatsapp",
        "whatsapp:+14155550123",
        "read",
    )
    assert Task.objects.get(type="whatsapp.inbound").status == S.IN_PROGRESS


def test_sms_through_a_real_worker_and_broker_ends_succeeded():
    """Production shape: the handler runs in a Celery worker, callbacks are stored by the web
    process with one INSERT and applied by the worker's drain."""
    from tests.support.services import celery_worker, redis_server

    key = api_key_create(name="e2e")[1]
    with redis_server() as (redis_url, _, _):
        env = platform_env(REDIS_URL=redis_url)
        with (
            web_server(env) as base,
            celery_worker({**env, "PUBLIC_BASE_URL": base}, queues="messaging,orchestrator"),
        ):
            task_id = create(
                base, key, {"type": "sms.send", "payload": {"to": "+14155550124", "body": "via worker"}}
            )
            task = wait_until(lambda: finished(task_id), timeout=30, message="the task to finish")
    assert task.status == S.SUCCEEDED, (task.error_code, task.error_message)
    from agents.common.models import WebhookEvent

    events = WebhookEvent.objects.filter(kind="messaging_status", payload__MessageSid=task.provider_id)
    assert events.count() >= 3 and all(e.processed_at for e in events)
