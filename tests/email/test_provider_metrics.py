"""Every provider call of the email agent is observed (latency, outcome, error code), so the
CommsProviderErrorRate alert sees SendGrid failing; and the sender is paced."""

from __future__ import annotations

import pytest

from agents.email.sending import pace_sender
from orchestrator import metrics
from orchestrator.errors import TransientError
from orchestrator.services import task_create
from tests.fakes.sendgrid import Answer

pytestmark = pytest.mark.django_db


def counts(provider: str, code: str) -> tuple[float, float]:
    """(requests, errors with ``code``) as counted in this process (REDIS_URL empty)."""
    labels = {"provider": provider, "operation": "mail.send"}
    samples = metrics.PROVIDER_LATENCY.labels(**labels).collect()[0].samples
    requests = next(s.value for s in samples if s.name.endswith("_count"))
    errors = metrics.PROVIDER_ERRORS.labels(code=code, **labels)._value.get()
    return requests, errors


def test_sendgrid_failure_and_smtp_fallback_are_both_observed(
    sendgrid, smtp_server, ada, settings, django_capture_on_commit_callbacks
):
    settings.REDIS_URL = ""
    settings.EMAIL_FALLBACK_PROVIDER = "smtp"
    sendgrid_before = counts("sendgrid", "sendgrid_unavailable")
    smtp_before = counts("smtp", "smtp_unavailable")
    sendgrid.script(Answer(503))

    with django_capture_on_commit_callbacks(execute=True):
        task_create(type="email.send", contact_id=ada.id, payload={"subject": "Hi", "text": "Hello"})

    assert len(sendgrid.received) == 1 and len(smtp_server.messages()) == 1
    sendgrid_after = counts("sendgrid", "sendgrid_unavailable")
    assert sendgrid_after == (sendgrid_before[0] + 1, sendgrid_before[1] + 1)  # one call, one error
    assert counts("smtp", "smtp_unavailable") == (smtp_before[0] + 1, smtp_before[1])  # one call, no error


def test_accepted_sendgrid_call_is_observed_without_an_error(
    sendgrid, ada, settings, django_capture_on_commit_callbacks
):
    settings.REDIS_URL = ""
    before = counts("sendgrid", "sendgrid_rejected")
    with django_capture_on_commit_callbacks(execute=True):
        task_create(type="email.send", contact_id=ada.id, payload={"subject": "Hi", "text": "Hello"})
    assert len(sendgrid.received) == 1
    assert counts("sendgrid", "sendgrid_rejected") == (before[0] + 1, before[1])


def test_a_refused_mail_counts_sendgrids_error_code(
    sendgrid, ada, settings, django_capture_on_commit_callbacks
):
    settings.REDIS_URL = ""
    before = counts("sendgrid", "sendgrid_rejected")
    sendgrid.script(Answer(400, {"errors": [{"message": "Invalid from", "field": "from"}]}))
    with django_capture_on_commit_callbacks(execute=True):
        task_create(type="email.send", contact_id=ada.id, payload={"subject": "Hi", "text": "Hello"})
    assert counts("sendgrid", "sendgrid_rejected") == (before[0] + 1, before[1] + 1)


def test_sender_is_paced_at_email_rate_per_second(settings):
    settings.REDIS_URL = ""
    settings.EMAIL_RATE_PER_SECOND = 1
    from comms_platform import ratelimit

    ratelimit.reset_memory()
    pace_sender(sender="pace-test@example.com")  # the bucket's one token
    with pytest.raises(TransientError) as exc:
        pace_sender(sender="pace-test@example.com")
    assert exc.value.code == "rate_limited"
    assert 0 < exc.value.retry_after <= 1
    pace_sender(sender="other@example.com")  # per sender


def test_no_rate_configured_never_waits(settings):
    settings.REDIS_URL = ""
    settings.EMAIL_RATE_PER_SECOND = 0
    for _ in range(20):
        pace_sender(sender="fast@example.com")
