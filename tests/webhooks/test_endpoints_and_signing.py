"""Outbound event webhooks, in process: the endpoints API, who receives what, and receivers
verifying our deliveries with the ``standardwebhooks`` library (not our own code)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from comms_platform import events, outbound
from event_webhooks import services
from event_webhooks.models import DeliveryStatus, EndpointEvent, WebhookDelivery, WebhookEndpoint
from orchestrator.api.auth import api_key_create
from orchestrator.services import task_create, task_fail
from tests.fakes.webhook_receiver import Answer, WebhookReceiver

pytestmark = pytest.mark.django_db


@pytest.fixture
def receiver():
    with WebhookReceiver() as r:
        yield r


def key_client(client, **scopes) -> tuple[object, str]:
    api_key, key = api_key_create(name="hooks", **scopes)
    client.defaults["HTTP_AUTHORIZATION"] = f"Api-Key {key}"
    return client, f"key:{api_key.id}"


def create_endpoint(client, url: str, types: list[str]) -> dict:
    response = client.post("/api/webhook-endpoints/", {"url": url, "event_types": types},
                           content_type="application/json")  # fmt: skip
    assert response.status_code == 201, response.content
    return response.json()


def headers_of(received) -> dict[str, str]:
    return {k.lower(): v for k, v in received.headers.items()}


def test_a_key_with_the_scope_creates_an_endpoint_and_sees_its_secret_once(client, receiver):
    client, _ = key_client(client, webhooks=True)
    body = create_endpoint(client, receiver.url, ["task.failed", "message.delivered"])
    assert body["secret"].startswith("whsec_") and body["enabled"] is True
    assert body["event_types"] == ["task.failed", "message.delivered"]
    listed = client.get("/api/webhook-endpoints/").json()
    shown = json.dumps(listed)
    assert body["id"] in shown and body["secret"] not in shown and "secret" not in listed[0]
    detail = client.get(f"/api/webhook-endpoints/{body['id']}/").json()
    assert "secret" not in detail
    # Stored encrypted, never in plain text.
    assert body["secret"] not in WebhookEndpoint.objects.get(id=body["id"]).secret_encrypted


def test_a_key_without_the_scope_is_refused_and_bad_input_is_a_clear_400(client, receiver):
    plain, _ = key_client(client)
    response = plain.post("/api/webhook-endpoints/", {"url": receiver.url, "event_types": ["task.failed"]},
                          content_type="application/json")  # fmt: skip
    assert response.status_code == 403 and "webhooks" in response.json()["error"]["message"]
    client, _ = key_client(client, webhooks=True)
    response = client.post("/api/webhook-endpoints/", {"url": receiver.url, "event_types": ["task.exploded"]},
                           content_type="application/json")  # fmt: skip
    assert response.status_code == 400
    assert "event_types" in response.json()["error"]["fields"]
    response = client.post("/api/webhook-endpoints/", {"url": "ftp://x", "event_types": []},
                           content_type="application/json")  # fmt: skip
    assert response.status_code == 400 and set(response.json()["error"]["fields"]) >= {"url", "event_types"}


def test_a_task_failure_is_delivered_signed_and_the_receiver_verifies_it(
    client, receiver, django_capture_on_commit_callbacks
):
    client, source = key_client(client, webhooks=True)
    secret = create_endpoint(client, receiver.url, ["task.failed"])["secret"]
    task, _ = task_create(type="diagnostic.echo", payload={"n": 1}, source=source)
    with django_capture_on_commit_callbacks(execute=True):
        task_fail(task_id=task.id, code="boom", message="it broke", actor="test")
    assert len(receiver.received) == 1
    got = receiver.received[0]
    payload = Webhook(secret).verify(got.body, got.headers)
    assert payload["type"] == "task.failed"
    assert payload["data"]["id"] == str(task.id) and payload["data"]["error_code"] == "boom"
    headers = headers_of(got)
    delivery = WebhookDelivery.objects.get()
    assert headers["webhook-id"] == delivery.webhook_id and delivery.status == DeliveryStatus.DELIVERED
    assert delivery.attempt_log.get().status_code == 200
    # Tampered body: refused by the library.
    tampered = got.body.replace(b"boom", b"fine")
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(tampered, got.headers)
    # Another secret: refused.
    with pytest.raises(WebhookVerificationError):
        Webhook(services.secrets.generate()).verify(got.body, got.headers)


def test_a_stale_timestamp_is_refused_by_the_receiver(client, receiver):
    client, _ = key_client(client, webhooks=True)
    secret = create_endpoint(client, receiver.url, ["task.failed"])["secret"]
    endpoint = WebhookEndpoint.objects.get()
    delivery = WebhookDelivery.objects.create(webhook_id=services.new_webhook_id(), endpoint=endpoint,
                                              url=endpoint.url, event_type="task.failed", payload={"a": 1})  # fmt: skip
    body = json.dumps({"a": 1})
    old = timezone.now() - timedelta(minutes=10)
    headers = services.sign_headers(delivery, body, services.signing_secrets(endpoint), old)
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(secret).verify(body, headers)
    fresh = services.sign_headers(delivery, body, services.signing_secrets(endpoint), timezone.now())
    assert Webhook(secret).verify(body, fresh) == {"a": 1}


def test_during_a_rotation_both_secrets_verify_and_after_it_only_the_new_one(
    client, receiver, django_capture_on_commit_callbacks
):
    client, _ = key_client(client, webhooks=True, all_tasks=True)
    created = create_endpoint(client, receiver.url, ["contact.opted_out"])
    old_secret = created["secret"]
    response = client.post(f"/api/webhook-endpoints/{created['id']}/rotate-secret/", {"overlap_seconds": 3600},
                           content_type="application/json")  # fmt: skip
    assert response.status_code == 200
    new_secret = response.json()["secret"]
    assert new_secret != old_secret and response.json()["previous_secret_expires_at"]
    with django_capture_on_commit_callbacks(execute=True):
        events.publish("contact.opted_out", {"contact_id": "c1", "channel": "sms", "source": "keyword"})
    got = receiver.received[-1]
    assert len(headers_of(got)["webhook-signature"].split(" ")) == 2
    assert Webhook(old_secret).verify(got.body, got.headers)["type"] == "contact.opted_out"
    assert Webhook(new_secret).verify(got.body, got.headers)["type"] == "contact.opted_out"
    # The overlap ends: the old secret no longer signs.
    WebhookEndpoint.objects.update(previous_secret_expires_at=timezone.now() - timedelta(seconds=1))
    with django_capture_on_commit_callbacks(execute=True):
        events.publish("contact.opted_out", {"contact_id": "c2", "channel": "sms", "source": "keyword"})
    got = receiver.received[-1]
    assert Webhook(new_secret).verify(got.body, got.headers)["data"]["contact_id"] == "c2"
    with pytest.raises(WebhookVerificationError):
        Webhook(old_secret).verify(got.body, got.headers)
    assert EndpointEvent.objects.filter(kind="secret_rotated").exists()


def test_an_endpoint_receives_only_its_own_clients_task_events(
    client, receiver, django_capture_on_commit_callbacks
):
    client, source = key_client(client, webhooks=True)
    create_endpoint(client, receiver.url, ["task.failed", "contact.opted_out"])
    mine, _ = task_create(type="diagnostic.echo", payload={}, source=source)
    theirs, _ = task_create(type="diagnostic.echo", payload={}, source="key:999999")
    with django_capture_on_commit_callbacks(execute=True):
        task_fail(task_id=theirs.id, code="x", message="x", actor="test")
        task_fail(task_id=mine.id, code="y", message="y", actor="test")
        events.publish("contact.opted_out", {"contact_id": "c", "channel": "sms", "source": "keyword"})
    ids = [json.loads(r.body)["data"].get("id") for r in receiver.received]
    assert ids == [str(mine.id)]


def test_a_400_is_not_retried(client, receiver, django_capture_on_commit_callbacks):
    client, source = key_client(client, webhooks=True)
    create_endpoint(client, receiver.url, ["task.failed"])
    receiver.script = [Answer(400)]
    task, _ = task_create(type="diagnostic.echo", payload={}, source=source)
    with django_capture_on_commit_callbacks(execute=True):
        task_fail(task_id=task.id, code="x", message="x", actor="test")
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == DeliveryStatus.FAILED and delivery.attempts == 1
    assert delivery.last_status_code == 400 and "not retried" in delivery.last_error
    assert len(receiver.received) == 1


# --- SSRF: production mode refuses private addresses ------------------------------------

FAKE_DNS = {"hooks.internal.example": ["10.1.2.3"], "metadata.example": ["169.254.169.254"],
            "loop.example": ["127.0.0.1"]}  # fmt: skip


@pytest.fixture
def production_rules(settings):
    settings.OUTBOUND_BLOCK_PRIVATE = True
    settings.OUTBOUND_ALLOW_PRIVATE_HOSTS = []
    outbound.set_resolver(lambda host, port: FAKE_DNS.get(host) or outbound.resolve(host, port))
    yield settings
    outbound.set_resolver(None)


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8080/hooks", "http://10.0.0.8/hooks", "http://169.254.169.254/latest/meta-data/",
    "http://hooks.internal.example/hooks", "http://metadata.example/hooks", "http://loop.example/hooks",
    "http://localhost/hooks",
])  # fmt: skip
def test_private_loopback_and_link_local_urls_are_refused_in_production(client, production_rules, url):
    client, _ = key_client(client, webhooks=True)
    response = client.post("/api/webhook-endpoints/", {"url": url, "event_types": ["task.failed"]},
                           content_type="application/json")  # fmt: skip
    assert response.status_code == 400, response.content
    assert "private, loopback or link-local" in response.json()["error"]["fields"]["url"][0]
    assert not WebhookEndpoint.objects.exists()


def test_a_delivery_to_an_address_turned_private_is_refused_not_retried(
    client, receiver, settings, django_capture_on_commit_callbacks
):
    client, source = key_client(client, webhooks=True)
    create_endpoint(client, receiver.url, ["task.failed"])  # allowed in test mode
    settings.OUTBOUND_BLOCK_PRIVATE = True
    task, _ = task_create(type="diagnostic.echo", payload={}, source=source)
    with django_capture_on_commit_callbacks(execute=True):
        task_fail(task_id=task.id, code="x", message="x", actor="test")
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == DeliveryStatus.FAILED and delivery.last_error.startswith("refused")
    assert receiver.received == []


def test_test_mode_allows_local_receivers(client, receiver):
    client, _ = key_client(client, webhooks=True)
    assert create_endpoint(client, receiver.url, ["task.failed"])["url"] == receiver.url
