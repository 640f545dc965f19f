"""Deliveries through the real path: the bus → the outbox row → Redis → a real Celery worker on
the ``webhooks`` queue → a local receiver. Retry timing, Retry-After, no retry on a 400,
the endpoint disabled past the limit, and a worker SIGKILLed mid-delivery."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
import redis
from django.conf import settings
from django.db import transaction

from comms_platform import events
from comms_platform.celery import app as celery_app
from event_webhooks import services
from event_webhooks.models import DeliveryStatus, EndpointEvent, WebhookDelivery, WebhookEndpoint
from tests.fakes.webhook_receiver import Answer, WebhookReceiver
from tests.support.services import celery_worker, platform_env, transactional_db, wait_until

pytestmark = [transactional_db, pytest.mark.worker, pytest.mark.services]


@pytest.fixture
def broker(redis_url):
    """The test process publishes to Redis (not in process) and the worker consumes from it."""
    redis.Redis.from_url(redis_url).delete(settings.WEBHOOK_QUEUE)
    celery_app.conf.task_always_eager = False
    return redis_url


def worker_env(redis_url: str, **overrides: str) -> dict[str, str]:
    base = {"REDIS_URL": redis_url, "WEBHOOK_RETRY_JITTER": "0", "WEBHOOK_RETRY_SCHEDULE": "1,1,1,1,1,1,1,1",
            "WEBHOOK_SWEEP_GRACE_SECONDS": "30"}  # fmt: skip
    return platform_env(**(base | overrides))


def publish(n: int = 1) -> None:
    with transaction.atomic():
        for i in range(n):
            events.publish(
                "contact.opted_out", {"contact_id": f"c{i}", "channel": "sms", "source": "keyword"}
            )


def test_500_then_429_with_retry_after_then_200_each_retried_at_the_right_time(broker, tmp_path):
    with WebhookReceiver() as receiver, celery_worker(worker_env(broker), queues="webhooks",
                                                      log_path=tmp_path / "worker.log"):  # fmt: skip
        services.endpoint_create(url=receiver.url, event_types=["contact.opted_out"], all_events=True)
        receiver.script = [Answer(500), Answer(429, {"Retry-After": "3"}), Answer(200)]
        publish()
        wait_until(lambda: WebhookDelivery.objects.filter(status=DeliveryStatus.DELIVERED).exists(), timeout=30,
                   message="the delivery to succeed on the third attempt")  # fmt: skip
    got = receiver.received
    assert len(got) == 3
    ids = {r.headers.get("webhook-id") or r.headers.get("Webhook-Id") for r in got}
    assert len(ids) == 1  # the same webhook-id on every attempt
    first_gap, second_gap = got[1].at - got[0].at, got[2].at - got[1].at
    assert 0.8 <= first_gap <= 2.5, first_gap  # the schedule's 1 s after the 500
    assert 2.9 <= second_gap <= 4.5, second_gap  # Retry-After: 3 (longer than the schedule's 1 s)
    delivery = WebhookDelivery.objects.get()
    assert delivery.attempts == 3 and delivery.last_status_code == 200
    assert [a.status_code for a in delivery.attempt_log.order_by("at")] == [500, 429, 200]


def test_a_400_is_answered_once_and_never_retried(broker, tmp_path):
    with WebhookReceiver() as receiver, celery_worker(worker_env(broker), queues="webhooks",
                                                      log_path=tmp_path / "worker.log"):  # fmt: skip
        services.endpoint_create(url=receiver.url, event_types=["contact.opted_out"], all_events=True)
        receiver.script = [Answer(400)]
        publish()
        wait_until(lambda: WebhookDelivery.objects.filter(status=DeliveryStatus.FAILED).exists(), timeout=20,
                   message="the delivery to fail")  # fmt: skip
        time.sleep(2.5)  # two retry periods: nothing more arrives
    assert len(receiver.received) == 1
    assert WebhookDelivery.objects.get().attempts == 1


def test_a_receiver_down_past_the_limit_disables_the_endpoint(broker, tmp_path):
    env = worker_env(broker, WEBHOOK_DISABLE_AFTER_SECONDS="2")
    with (
        WebhookReceiver() as receiver,
        celery_worker(env, queues="webhooks", log_path=tmp_path / "worker.log"),
    ):
        receiver.default = Answer(503)
        endpoint, _ = services.endpoint_create(
            url=receiver.url, event_types=["contact.opted_out"], all_events=True
        )
        publish()
        wait_until(lambda: not WebhookEndpoint.objects.get(id=endpoint.id).enabled, timeout=30,
                   message="the endpoint to be disabled")  # fmt: skip
    endpoint.refresh_from_db()
    assert "failing for more than 2 s" in endpoint.disabled_reason
    event = EndpointEvent.objects.get(endpoint=endpoint, kind="disabled")
    assert event.actor == "webhooks"
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == DeliveryStatus.FAILED and delivery.attempts >= 3
    assert len(receiver.received) == delivery.attempts
    # A disabled endpoint gets nothing new (this process sees the worker's change once its
    # endpoint cache expires: WEBHOOK_ENDPOINT_CACHE_SECONDS; cleared here not to wait).
    celery_app.conf.task_always_eager = True
    services.endpoint_cache.clear()
    publish()
    assert WebhookDelivery.objects.count() == 1


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_a_worker_killed_mid_delivery_delivers_it_after_all_with_the_same_webhook_id(broker, tmp_path):
    env = worker_env(broker, WEBHOOK_TIMEOUT_SECONDS="3", WEBHOOK_LEASE_MARGIN_SECONDS="1")
    with (
        WebhookReceiver() as receiver,
        celery_worker(env, queues="webhooks", log_path=tmp_path / "worker.log") as worker,
    ):
        services.endpoint_create(url=receiver.url, event_types=["contact.opted_out"], all_events=True)
        receiver.script = [Answer(200, delay=8)]  # the first request hangs: the worker dies meanwhile
        publish()
        wait_until(lambda: len(receiver.received) == 1, timeout=20, message="the first attempt to arrive")
        children = _children(worker.pid)
        assert children, "the prefork worker has a child process"
        for child in children:
            os.kill(child, signal.SIGKILL)
        wait_until(lambda: WebhookDelivery.objects.filter(status=DeliveryStatus.DELIVERED).exists(), timeout=40,
                   message="the delivery to be made again and succeed")  # fmt: skip
    assert len(receiver.received) >= 2
    ids = {json.dumps(sorted((k.lower(), v) for k, v in r.headers.items() if k.lower() == "webhook-id"))
           for r in receiver.received}  # fmt: skip
    assert len(ids) == 1
    assert receiver.received[0].body == receiver.received[-1].body
