"""/metrics: counters move when a task runs and when a webhook is refused; scrape-time gauges."""

from __future__ import annotations

import json
import math
from datetime import timedelta

import pytest
from django.http import HttpRequest
from django.test import override_settings
from django.urls import include, path
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from agents.common.webhooks import WebhookView
from orchestrator import metrics
from orchestrator.errors import PermanentError
from orchestrator.models import AgentRegistration
from tests.support.services import redis_server


class SharedSecretWebhook(WebhookView):
    """A provider whose signature is a shared header value: enough to exercise the base view."""

    provider = "testprovider"
    kind = "status"
    content_types = ("application/json",)

    def verify(self, request: HttpRequest) -> bool:
        return request.headers.get("X-Test-Signature") == "good"

    def parse(self, request: HttpRequest):
        return [json.loads(request.body)]

    def dedupe_key(self, event):
        return event["id"]

    def process(self, event, record) -> str:
        return "ok"


urlpatterns = [
    path("hook", SharedSecretWebhook.as_view()),
    path("", include("comms_platform.urls")),
]


def scrape(client, **headers) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.mark.django_db
def test_task_counters_move_when_a_task_runs(api, client, django_capture_on_commit_callbacks):
    labels = {"type": "diagnostic.echo", "channel": "system"}
    before = scrape(client)
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(
            "/api/tasks/", {"type": "diagnostic.echo", "payload": {"n": 1}}, content_type="application/json"
        )
    assert response.status_code == 201
    assert api.get(f"/api/tasks/{response.json()['id']}/").json()["status"] == "succeeded"
    after = scrape(client)
    for status in ("pending", "succeeded"):
        assert (
            value(after, "comms_tasks_total", status=status, **labels)
            - value(before, "comms_tasks_total", status=status, **labels)
            == 1
        ), status


@pytest.mark.django_db
def test_open_and_recently_finished_tasks_are_read_from_the_database(api, client):
    from orchestrator.models import Task

    Task.objects.create(type="diagnostic.echo", channel="system", status="queued")
    Task.objects.create(type="diagnostic.echo", channel="system", status="failed", updated_at=timezone.now())
    samples = scrape(client)
    assert value(samples, "comms_tasks_open", type="diagnostic.echo", status="queued") == 1
    assert (
        value(
            samples, "comms_tasks_finished_recent", type="diagnostic.echo", channel="system", status="failed"
        )
        == 1
    )


@pytest.mark.django_db
def test_smoke_contacts_tasks_stay_out_of_the_scraped_gauges_and_the_health_page(client, admin_client):
    from dossiers.models import Contact
    from orchestrator.models import Task

    smoke = Contact.objects.create(name="Smoke test", phone="+14155550100", synthetic=True)
    real = Contact.objects.create(name="Real", phone="+14155550101")
    for contact in (smoke, real):
        Task.objects.create(type="sms.send", channel="sms", status="queued", contact=contact)
        Task.objects.create(type="sms.send", channel="sms", status="failed", contact=contact,
                            updated_at=timezone.now(), finished_at=timezone.now())  # fmt: skip
    samples = scrape(client)
    assert value(samples, "comms_tasks_open", type="sms.send", status="queued") == 1
    assert value(samples, "comms_tasks_finished_recent", type="sms.send", channel="sms", status="failed") == 1
    health = admin_client.get("/admin/health/")
    assert (health.context["totals"]["created"], health.context["totals"]["failed"]) == (2, 1)


@pytest.mark.django_db
@override_settings(ROOT_URLCONF=__name__)
def test_webhook_counters_move_when_refused_and_when_accepted(client):
    labels = {"provider": "testprovider", "kind": "status"}
    before = scrape(client)
    refused = client.post(
        "/hook", data='{"id": "e1"}', content_type="application/json", HTTP_X_TEST_SIGNATURE="bad"
    )
    assert refused.status_code == 403
    middle = scrape(client)
    assert (
        value(middle, "comms_webhooks_total", result="refused", **labels)
        - value(before, "comms_webhooks_total", result="refused", **labels)
        == 1
    )
    assert value(middle, "comms_webhooks_total", result="accepted", **labels) == value(
        before, "comms_webhooks_total", result="accepted", **labels
    )
    accepted = client.post(
        "/hook", data='{"id": "e1"}', content_type="application/json", HTTP_X_TEST_SIGNATURE="good"
    )
    assert accepted.status_code == 200
    after = scrape(client)
    assert (
        value(after, "comms_webhooks_total", result="accepted", **labels)
        - value(middle, "comms_webhooks_total", result="accepted", **labels)
        == 1
    )


def test_provider_calls_are_timed_and_errors_counted_by_code(client):
    labels = {"provider": "twilio", "operation": "messages.create"}
    with metrics.observe_provider_call("twilio", "messages.create"):
        pass
    with pytest.raises(PermanentError), metrics.observe_provider_call("twilio", "messages.create"):
        raise PermanentError("invalid number", code="21211")
    with metrics.observe_provider_call("twilio", "messages.create") as call:
        call.failed(429)
    samples = scrape(client)
    assert value(samples, "comms_provider_errors_total", code="21211", **labels) >= 1
    assert value(samples, "comms_provider_errors_total", code="429", **labels) >= 1
    assert value(samples, "comms_provider_request_seconds_count", **labels) >= 3


@pytest.mark.django_db
def test_heartbeat_age_per_enabled_agent(client):
    AgentRegistration.objects.filter(agent="diagnostic").update(
        last_heartbeat_at=timezone.now() - timedelta(seconds=42)
    )
    samples = scrape(client)
    age = value(samples, "comms_agent_heartbeat_age_seconds", agent="diagnostic")
    assert 42 <= age < 60
    AgentRegistration.objects.filter(agent="diagnostic").update(last_heartbeat_at=None)
    assert math.isinf(value(scrape(client), "comms_agent_heartbeat_age_seconds", agent="diagnostic"))
    AgentRegistration.objects.filter(agent="diagnostic").update(enabled=False)
    samples = scrape(client)
    assert ("comms_agent_heartbeat_age_seconds", (("agent", "diagnostic"),)) not in samples
    assert value(samples, "comms_agent_enabled", type="diagnostic.echo", agent="diagnostic") == 0


@pytest.mark.django_db
def test_queue_depth_read_from_redis(client, settings):
    import redis

    with redis_server() as (url, _port, _proc):
        settings.REDIS_URL = url
        r = redis.Redis.from_url(url)
        r.lpush("messaging", "a", "b", "c")
        r.lpush("email\x06\x163", "d")
        samples = scrape(client)
    assert value(samples, "comms_queue_depth", queue="messaging") == 3
    assert value(samples, "comms_queue_depth", queue="email") == 1
    assert value(samples, "comms_queue_depth", queue="voice") == 0


@pytest.mark.django_db
def test_queue_depth_is_zero_without_redis_and_scrape_survives_redis_down(client, settings):
    settings.REDIS_URL = ""
    assert value(scrape(client), "comms_queue_depth", queue="orchestrator") == 0
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens: the other gauges still answer
    samples = scrape(client)
    assert ("comms_queue_depth", (("queue", "orchestrator"),)) not in samples
    assert any(name == "comms_agent_enabled" for name, _ in samples)


@pytest.mark.django_db
def test_bearer_token_protects_metrics(client, settings):
    settings.METRICS_TOKEN = "s3cret-metrics-token"
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-metrics-token").status_code == 200


@pytest.mark.django_db
def test_alert_rules_only_use_metrics_that_metrics_exposes(client):
    """Every comms_* series an alert reads is one /metrics serves (after a task and a provider call)."""
    import re
    from pathlib import Path

    import yaml

    from orchestrator.models import Task

    Task.objects.create(type="diagnostic.echo", channel="system", status="succeeded")
    Task.objects.create(type="diagnostic.echo", channel="system", status="pending")
    metrics.task_entered("diagnostic.echo", "system", "succeeded")
    metrics.webhook_refused("twilio", "status")
    with metrics.observe_provider_call("twilio", "messages.create") as call:
        call.failed(500)
    exposed = {name for name, _ in scrape(client)}
    rules = yaml.safe_load(
        (Path(__file__).resolve().parents[2] / "deploy" / "prometheus-rules.yml").read_text()
    )
    alerts = {rule["alert"]: rule for group in rules["groups"] for rule in group["rules"]}
    assert {
        "CommsQueueBacklogGrowing", "CommsAgentSilent", "CommsProviderErrorRate",
        "CommsWebhookSignatureFailures", "CommsDeliveryRateDropping",
    } <= set(alerts)  # fmt: skip
    for name, rule in alerts.items():
        used = set(re.findall(r"\bcomms_[a-z_]+", rule["expr"]))
        assert used, name
        assert used <= exposed, f"{name} reads {used - exposed}, which /metrics does not serve"
        assert rule["annotations"]["runbook"].startswith("docs/operations.md#")


@pytest.mark.django_db
def test_provider_calls_made_in_another_process_show_on_this_metrics_via_redis(client, settings):
    """A Celery worker on Render cannot be scraped: its provider calls reach /metrics through Redis."""
    import subprocess
    import sys

    from tests.support.services import ROOT

    script = (
        "import django; django.setup()\n"
        "from orchestrator.metrics import observe_provider_call\n"
        "with observe_provider_call('sendgrid', 'mail.send'): pass\n"
        "with observe_provider_call('sendgrid', 'mail.send') as call: call.failed(503)\n"
    )
    labels = {"provider": "sendgrid", "operation": "mail.send"}
    in_process_before = metrics.PROVIDER_LATENCY.labels(**labels)._sum.get()  # earlier tests' calls
    with redis_server() as (url, _port, _proc):
        settings.REDIS_URL = url
        env = {"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "comms_platform.settings", "COMMS_MODE": "test",
               "REDIS_URL": url}  # fmt: skip
        subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, check=True, capture_output=True)
        samples = scrape(client)
    assert value(samples, "comms_provider_request_seconds_count", **labels) == 2
    assert value(samples, "comms_provider_request_seconds_bucket", le="+Inf", **labels) == 2
    assert value(samples, "comms_provider_request_seconds_bucket", le="30.0", **labels) == 2
    assert value(samples, "comms_provider_errors_total", code="503", **labels) == 1
    # Counted once: the in-process objects were not used.
    assert metrics.PROVIDER_LATENCY.labels(**labels)._sum.get() == in_process_before


@pytest.mark.django_db
def test_provider_latency_buckets_read_back_from_redis_are_cumulative(client, settings):
    """Each call writes only the bucket it falls in; /metrics serves Prometheus's cumulative buckets."""
    labels = {"provider": "twilio", "operation": "buckets.check"}
    with redis_server() as (url, _port, _proc):
        settings.REDIS_URL = url
        for seconds in (0.01, 0.3, 0.4, 60.0):  # 60 s: past the last bound, only in +Inf
            metrics.record_provider_call("twilio", "buckets.check", seconds, None)
        samples = scrape(client)
    bucket = "comms_provider_request_seconds_bucket"
    assert value(samples, bucket, le="0.05", **labels) == 1
    assert value(samples, bucket, le="0.25", **labels) == 1
    assert value(samples, bucket, le="0.5", **labels) == 3
    assert value(samples, bucket, le="30.0", **labels) == 3
    assert value(samples, bucket, le="+Inf", **labels) == 4
    assert value(samples, "comms_provider_request_seconds_count", **labels) == 4


def test_provider_calls_without_redis_are_counted_in_process(client, settings):
    settings.REDIS_URL = ""
    labels = {"provider": "openai", "operation": "chat.completions"}
    before = metrics.PROVIDER_ERRORS.labels(code="timeout", **labels)._value.get()
    with metrics.observe_provider_call("openai", "chat.completions") as call:
        call.failed("timeout")
    assert metrics.PROVIDER_ERRORS.labels(code="timeout", **labels)._value.get() == before + 1
    samples = scrape(client)
    assert value(samples, "comms_provider_errors_total", code="timeout", **labels) == before + 1
