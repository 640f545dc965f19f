"""A task's one-off ``callback_url``: the task's events go there too, through the same outbox,
signed with the API key's callback secret (shown once with the key, rotatable with an overlap);
receivers verify with the ``standardwebhooks`` library; SSRF refused at intake in production."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.db import transaction
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from comms_platform import events, outbound
from event_webhooks import services
from event_webhooks.models import CallbackSecret, DeliveryStatus, WebhookDelivery
from orchestrator.api.auth import api_key_create
from orchestrator.models import Task
from orchestrator.services import task_fail
from tests.fakes.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.django_db

CALLBACK_LABEL = "callback signing secret"


@pytest.fixture
def receiver():
    with WebhookReceiver() as r:
        yield r


@pytest.fixture
def keyed(client):
    api_key, key = api_key_create(name="cb-client")
    client.defaults["HTTP_AUTHORIZATION"] = f"Api-Key {key}"
    return client, api_key, api_key.shown_once[CALLBACK_LABEL]


def post_task(client, **extra):
    return client.post("/api/tasks/", {"type": "diagnostic.echo", "payload": {"n": 1}, **extra},
                       content_type="application/json")  # fmt: skip


def test_a_new_client_key_gets_a_callback_secret_shown_once_and_stored_encrypted(keyed):
    _, api_key, secret = keyed
    assert secret.startswith("whsec_")
    row = CallbackSecret.objects.get(owner=f"key:{api_key.pk}")
    assert secret not in row.secret_encrypted


def test_create_api_key_prints_the_callback_secret():
    out = io.StringIO()
    call_command("create_api_key", "printer", stdout=out)
    text = out.getvalue()
    assert CALLBACK_LABEL in text
    secret = [line for line in text.splitlines() if line.startswith("whsec_")]
    assert len(secret) == 1


def test_a_task_with_a_callback_url_has_its_failure_delivered_there_signed(
    keyed, receiver, django_capture_on_commit_callbacks
):
    client, _, secret = keyed
    response = post_task(client, callback_url=receiver.url)
    assert response.status_code == 201, response.content
    assert response.json()["callback_url"] == receiver.url
    task = Task.objects.get(id=response.json()["id"])
    with django_capture_on_commit_callbacks(execute=True):
        task_fail(task_id=task.id, code="boom", message="it broke", actor="test")
    (got,) = [r for r in receiver.received if b"task.failed" in r.body]
    payload = Webhook(secret).verify(got.body, got.headers)
    assert payload["type"] == "task.failed" and payload["data"]["id"] == str(task.id)
    delivery = WebhookDelivery.objects.get(event_type="task.failed")
    assert delivery.endpoint_id is None and delivery.url == receiver.url
    assert delivery.status == DeliveryStatus.DELIVERED and delivery.attempt_log.get().status_code == 200
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(got.body.replace(b"boom", b"fine"), got.headers)
    # Another key's callback secret does not verify it.
    other = api_key_create(name="other")[0].shown_once[CALLBACK_LABEL]
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(got.body, got.headers)


def test_a_message_event_of_the_task_goes_to_its_callback_url(
    keyed, receiver, django_capture_on_commit_callbacks
):
    client, _, secret = keyed
    task_id = post_task(client, callback_url=receiver.url).json()["id"]
    plain_id = post_task(client).json()["id"]  # no callback_url: nothing goes anywhere
    # The bus learns that callback tasks exist within WEBHOOK_ENDPOINT_CACHE_SECONDS (cached).
    services.endpoint_cache.clear()
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        events.publish(
            "message.delivered", {"id": 1, "task_id": task_id, "status": "delivered"}, task_id=task_id
        )
        events.publish(
            "message.delivered", {"id": 2, "task_id": plain_id, "status": "delivered"}, task_id=plain_id
        )
    (got,) = receiver.received
    assert Webhook(secret).verify(got.body, got.headers)["data"]["task_id"] == task_id
    assert WebhookDelivery.objects.count() == 1


def test_a_rotated_callback_secret_overlaps_then_the_old_one_stops(
    keyed, receiver, django_capture_on_commit_callbacks
):
    client, _, old = keyed
    response = client.post(
        "/api/callback-secret/rotate/", {"overlap_seconds": 3600}, content_type="application/json"
    )
    assert response.status_code == 200, response.content
    new = response.json()["secret"]
    assert new != old and response.json()["previous_secret_expires_at"]
    task_id = post_task(client, callback_url=receiver.url).json()["id"]
    with django_capture_on_commit_callbacks(execute=True):
        task_fail(task_id=task_id, code="x", message="x", actor="test")
    got = receiver.received[-1]
    assert Webhook(new).verify(got.body, got.headers)["type"] == "task.failed"
    assert Webhook(old).verify(got.body, got.headers)["type"] == "task.failed"
    # Rotated again with no overlap: only the newest verifies.
    newest = client.post("/api/callback-secret/rotate/", {"overlap_seconds": 0},
                         content_type="application/json").json()["secret"]  # fmt: skip
    task_id = post_task(client, callback_url=receiver.url).json()["id"]
    with django_capture_on_commit_callbacks(execute=True):
        task_fail(task_id=task_id, code="y", message="y", actor="test")
    got = receiver.received[-1]
    assert Webhook(newest).verify(got.body, got.headers)["type"] == "task.failed"
    for stale in (old, new):
        with pytest.raises(WebhookVerificationError):
            Webhook(stale).verify(got.body, got.headers)


def test_the_rotate_command_makes_a_secret_for_an_older_key(keyed):
    _, api_key, old = keyed
    out = io.StringIO()
    call_command("rotate_callback_secret", str(api_key.pk), stdout=out)
    new = out.getvalue().strip().splitlines()[-1]
    assert new.startswith("whsec_") and new != old


FAKE_DNS = {"hooks.internal.example": ["10.1.2.3"], "metadata.example": ["169.254.169.254"]}


@pytest.fixture
def production_rules(settings):
    settings.OUTBOUND_BLOCK_PRIVATE = True
    settings.OUTBOUND_ALLOW_PRIVATE_HOSTS = []
    outbound.set_resolver(lambda host, port: FAKE_DNS.get(host) or outbound.resolve(host, port))
    yield settings
    outbound.set_resolver(None)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/cb", "http://10.0.0.8/cb", "http://169.254.169.254/x",
                                 "http://hooks.internal.example/cb", "http://metadata.example/cb"])  # fmt: skip
def test_a_private_callback_url_is_refused_at_intake_in_production(keyed, production_rules, url):
    client, _, _ = keyed
    for path, body in (("/api/tasks/", {"type": "diagnostic.echo", "payload": {}}),
                       ("/api/calls/", {"to": "+14155550123", "goal": "confirm"})):  # fmt: skip
        response = client.post(path, {**body, "callback_url": url}, content_type="application/json")
        assert response.status_code == 400, response.content
        problems = response.json()["error"]["problems"]
        assert [p["code"] for p in problems if p["field"] == "callback_url"] == ["url_refused"], problems
        assert "private, loopback or link-local" in response.json()["error"]["fields"]["callback_url"][0]
    assert not Task.objects.exists()


def test_a_callback_url_that_is_not_http_is_invalid_url(keyed):
    client, _, _ = keyed
    response = post_task(client, callback_url="ftp://example.com/x")
    assert response.status_code == 400
    for bad in ("ftp://example.com/x", "not a url"):
        response = post_task(client, callback_url=bad)
        assert response.status_code == 400
        problems = response.json()["error"]["problems"]
        assert [p["code"] for p in problems if p["field"] == "callback_url"] == ["invalid_url"], problems
