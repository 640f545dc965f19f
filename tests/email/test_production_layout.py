"""The production layout with the real providers: the API under gunicorn, a Celery worker on
the email queue sending through django-anymail's SendGrid backend to the local fake SendGrid,
a private Redis. The worker's provider calls reach the web process's /metrics (what
CommsProviderErrorRate reads), and a signed SendGrid event POSTed to gunicorn finishes the task
through anymail's validators and normalised events."""

from __future__ import annotations

import json
import time

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec
from prometheus_client.parser import text_string_to_metric_families

from agents.email import event_keys
from dossiers.models import Email
from orchestrator.api.auth import api_key_create
from orchestrator.models import Task
from tests.fakes.sendgrid import Answer, FakeSendGrid
from tests.support.services import (
    celery_worker,
    platform_env,
    redis_server,
    transactional_db,
    wait_until,
    web_server,
)

pytestmark = [transactional_db, pytest.mark.worker, pytest.mark.services]


def provider_samples(base: str) -> dict[tuple[str, str], float]:
    """(metric name, code) → value for provider="sendgrid", operation="mail.send"."""
    text = requests.get(f"{base}/metrics", timeout=10).text
    found: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.labels.get("provider") == "sendgrid" and s.labels.get("operation") == "mail.send":
                found[(s.name, s.labels.get("code", ""))] = s.value
    return found


def test_worker_sends_through_anymail_metrics_reach_the_web_and_a_signed_event_finishes(tmp_path):
    key = api_key_create(name="it")[1]
    auth = {"Authorization": f"Api-Key {key}"}
    signing_key = ec.generate_private_key(ec.SECP256R1())
    with FakeSendGrid() as fake, redis_server() as (redis_url, _, _):
        env = platform_env(REDIS_URL=redis_url, SENDGRID_API_KEY=fake.api_key, SENDGRID_API_BASE_URL=fake.url,
                           EMAIL_PROVIDER="sendgrid", SENDGRID_EVENT_PUBLIC_KEY=event_keys.public_key_b64(signing_key))  # fmt: skip
        fake.script(Answer(202), Answer(400, {"errors": [{"message": "Invalid from", "field": "from"}]}))
        with web_server(env) as base, celery_worker({**env, "PUBLIC_BASE_URL": base}, queues="email",
                                                    log_path=tmp_path / "worker.log"):  # fmt: skip
            ids = []
            for subject, final in (("Sent", "in_progress"), ("Refused", "failed")):  # one after the other
                response = requests.post(f"{base}/api/tasks/", headers=auth, timeout=30, json={
                    "type": "email.send", "payload": {"to": "ada@example.org", "subject": subject, "text": "Hi"}})  # fmt: skip
                assert response.status_code == 201, response.text
                ids.append(response.json()["id"])
                wait_until(lambda f=final: Task.objects.filter(id=ids[-1], status=f).exists(), timeout=30,
                           message=f"{subject}: {final}")  # fmt: skip

            # What left: anymail's SendGrid payload, with our ids as custom args.
            sent = {r.body["subject"]: r.body for r in fake.received}
            email = Email.objects.get(task_id=ids[0])
            assert sent["Sent"]["custom_args"] == {"task_id": ids[0], "email_id": str(email.id)}
            assert email.provider == "sendgrid" and email.provider_message_id == fake.message_ids[0]

            # The worker's calls, counted through Redis, on the web's /metrics.
            samples = provider_samples(base)
            assert samples[("comms_provider_request_seconds_count", "")] == 2
            assert samples[("comms_provider_errors_total", "sendgrid_rejected")] == 1

            # A signed "delivered" event, as SendGrid posts it, finishes the sent task.
            event = {"email": "ada@example.org", "timestamp": int(time.time()), "event": "delivered",
                     "sg_event_id": "evt-1", "sg_message_id": f"{email.provider_message_id}.filter-1",
                     "task_id": ids[0], "email_id": str(email.id)}  # fmt: skip
            body = json.dumps([event]).encode()
            ts = str(int(time.time()))
            headers = {"Content-Type": "application/json", "X-Twilio-Email-Event-Webhook-Timestamp": ts,
                       "X-Twilio-Email-Event-Webhook-Signature": event_keys.sign(signing_key, ts, body)}  # fmt: skip
            answer = requests.post(
                f"{base}/webhooks/sendgrid/events/", data=body, headers=headers, timeout=10
            )
            assert answer.status_code == 200, answer.text
            forged = requests.post(f"{base}/webhooks/sendgrid/events/", data=body.replace(b"delivered", b"bounce"),
                                   headers=headers, timeout=10)  # fmt: skip
            assert forged.status_code == 403

    assert Task.objects.get(id=ids[0]).status == "succeeded"
    assert Email.objects.get(id=email.id).status == "delivered"
    refused = Task.objects.get(id=ids[1])
    assert refused.error_code == "sendgrid_rejected" and "Invalid from" in refused.error_message
