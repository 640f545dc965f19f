"""The worked example of docs/architecture.md: a second SMS provider (a generic HTTP gateway),
through the same send pipeline, against a local fake gateway, with its signed status callback."""

import json

import pytest

from agents.messaging.models import SendAttempt
from agents.messaging.providers.gateway import STATUS_PATH, signature
from dossiers.models import Message
from orchestrator.services import task_create
from orchestrator.states import TaskStatus
from tests.fakes.sms_gateway import FakeGateway
from tests.messaging.conftest import PUBLIC
from tests.ops.test_metrics import scrape, value

pytestmark = pytest.mark.django_db
S = TaskStatus
KEY, SECRET = "gw-key-123", "gw-webhook-secret"


@pytest.fixture
def gateway(settings):
    fake = FakeGateway(api_key=KEY).start()
    settings.MESSAGING_PROVIDER = "gateway"
    settings.SMS_GATEWAY_URL = fake.base_url
    settings.SMS_GATEWAY_API_KEY = KEY
    settings.SMS_GATEWAY_WEBHOOK_SECRET = SECRET
    yield fake
    fake.stop()


def send(capture, **payload):
    with capture(execute=True):
        task, _ = task_create(type="sms.send", payload=payload)
    task.refresh_from_db()
    return task


def callback(client, task, body: dict, secret: str = SECRET):
    raw = json.dumps(body).encode()
    return client.post(f"{STATUS_PATH}?task={task.id}", data=raw, content_type="application/json",
                       HTTP_X_GATEWAY_SIGNATURE=signature(raw, secret))  # fmt: skip


def test_a_send_goes_to_the_gateway_and_its_signed_callbacks_finish_the_task(
    client, gateway, django_capture_on_commit_callbacks
):
    task = send(django_capture_on_commit_callbacks, to="+14155550100", body="Hello")
    [request] = gateway.requests
    assert (request["method"], request["path"], request["auth"]) == ("POST", "/v1/messages", f"Bearer {KEY}")
    assert request["json"] == {"to": "+14155550100", "from": "+15005550006", "text": "Hello",
                               "callback_url": f"{PUBLIC}{STATUS_PATH}?task={task.id}"}  # fmt: skip
    sid = next(iter(gateway.messages))
    assert (task.status, task.provider_id) == (S.IN_PROGRESS, sid)
    assert SendAttempt.objects.get(task=task).outcome == "accepted"

    assert callback(client, task, {"id": sid, "status": "sent"}).status_code == 204
    assert callback(client, task, {"id": sid, "status": "delivered"}).status_code == 204
    assert callback(client, task, {"id": sid, "status": "delivered"}).status_code == 204  # a retry: nothing
    task.refresh_from_db()
    assert task.status == S.SUCCEEDED
    assert Message.objects.get(task=task).status == "delivered"


def test_a_wrong_signature_is_refused_and_changes_nothing(
    client, gateway, django_capture_on_commit_callbacks
):
    task = send(django_capture_on_commit_callbacks, to="+14155550100", body="Hello")
    sid = next(iter(gateway.messages))
    assert callback(client, task, {"id": sid, "status": "delivered"}, secret="wrong").status_code == 403
    bad = client.post(f"{STATUS_PATH}?task={task.id}", data=b"{}", content_type="application/json")
    assert bad.status_code == 403
    task.refresh_from_db()
    assert task.status == S.IN_PROGRESS


def test_a_bad_callback_body_is_a_400(client, gateway, django_capture_on_commit_callbacks):
    task = send(django_capture_on_commit_callbacks, to="+14155550100", body="Hello")
    response = callback(client, task, {"status": "delivered"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "bad_request"


def test_gateway_errors_are_retried_or_refused_and_observed(
    client, gateway, django_capture_on_commit_callbacks
):
    labels = {"provider": "gateway", "operation": "messages.create"}
    before = scrape(client)
    gateway.script = [503]
    task = send(django_capture_on_commit_callbacks, to="+14155550100", body="Hello")
    assert task.status == S.IN_PROGRESS and len(gateway.requests) == 2  # 503 retried, then accepted
    gateway.script = [422]
    refused = send(django_capture_on_commit_callbacks, to="+14155550101", body="Hello")
    assert (refused.status, refused.error_code) == (S.FAILED, "gateway_422")
    after = scrape(client)
    errors = "comms_provider_errors_total"
    for code in ("gateway_503", "gateway_422"):
        assert value(after, errors, code=code, **labels) - value(before, errors, code=code, **labels) == 1
