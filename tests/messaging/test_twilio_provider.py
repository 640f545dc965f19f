"""The production provider: the real twilio SDK against a local fake Twilio server."""

import json

import pytest

from agents.messaging.models import MessageTemplate, SendAttempt
from dossiers.models import Consent, Contact, Message
from orchestrator.models import Task
from orchestrator.services import task_create
from orchestrator.states import TaskStatus
from tests.fakes.twilio import Scripted
from tests.messaging.conftest import ACCOUNT, STATUS_URL, TOKEN

pytestmark = pytest.mark.django_db
S = TaskStatus
PATH = f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json"


def send(capture, type_="sms.send", **payload):
    with capture(execute=True):
        task, _ = task_create(type=type_, payload=payload)
    task.refresh_from_db()
    return task


def test_sms_fields_auth_and_stored_sid(fake_twilio, django_capture_on_commit_callbacks):
    task = send(
        django_capture_on_commit_callbacks,
        to="+14155550100",
        body="Hello €",
        media_url=["https://x.test/a.png"],
    )
    [request] = fake_twilio.posts()
    assert request.path == PATH
    assert request.auth == (ACCOUNT, TOKEN)
    assert request.form == {
        "To": ["+14155550100"],
        "From": ["+15005550006"],
        "Body": ["Hello €"],
        "MediaUrl": ["https://x.test/a.png"],
        "StatusCallback": [f"{STATUS_URL}?task={task.id}#rc=3&rp=all"],
    }
    sid = fake_twilio.messages[0]["sid"]
    assert (task.status, task.provider_id) == (S.IN_PROGRESS, sid)
    message = Message.objects.get(task=task)
    assert (message.provider_sid, message.direction, message.encoding, message.segments) == (
        sid, "outbound", "GSM-7", 1)  # fmt: skip
    assert SendAttempt.objects.get(task=task).outcome == "accepted"


def test_messaging_service_sid_replaces_from(fake_twilio, settings, django_capture_on_commit_callbacks):
    settings.TWILIO_MESSAGING_SERVICE_SID = "MG" + "1" * 32
    send(django_capture_on_commit_callbacks, to="+14155550100", body="hi")
    form = fake_twilio.posts()[0].form
    assert form["MessagingServiceSid"] == ["MG" + "1" * 32]
    assert "From" not in form


def test_whatsapp_template_sends_content_sid_and_variables(fake_twilio, django_capture_on_commit_callbacks):
    MessageTemplate.objects.create(name="appt", locale="en", channel="whatsapp", content_sid="HX" + "a" * 32,
                                   content_variables={"1": "name", "2": "date"})  # fmt: skip
    task = send(django_capture_on_commit_callbacks, "whatsapp.send", to="+14155550100", template="appt",
                variables={"name": "Ada", "date": "Monday"})  # fmt: skip
    form = fake_twilio.posts()[0].form
    assert form["To"] == ["whatsapp:+14155550100"]
    assert form["From"] == ["whatsapp:+14155238886"]
    assert form["ContentSid"] == ["HX" + "a" * 32]
    assert json.loads(form["ContentVariables"][0]) == {"1": "Ada", "2": "Monday"}
    assert "Body" not in form
    assert task.status == S.IN_PROGRESS  # a template may be sent outside the 24-hour window


def test_429_and_500_are_retried_then_sent(fake_twilio, django_capture_on_commit_callbacks):
    fake_twilio.script = [Scripted(429, 20429, "Too Many Requests"), Scripted(500, 20500, "Internal")]
    task = send(django_capture_on_commit_callbacks, to="+14155550100", body="hi")
    assert len(fake_twilio.posts()) == 3
    assert (task.status, task.attempts) == (S.IN_PROGRESS, 3)
    assert list(SendAttempt.objects.filter(task=task).values_list("outcome", flat=True)) == [
        "retry", "retry", "accepted"]  # fmt: skip


def test_5xx_until_the_retry_budget_is_spent_fails_with_the_reason(
    fake_twilio, settings, django_capture_on_commit_callbacks
):
    settings.MESSAGING_MAX_RETRIES = 2
    fake_twilio.script = [Scripted(503, 20503, "Service unavailable")] * 10
    task = send(django_capture_on_commit_callbacks, to="+14155550100", body="hi")
    assert len(fake_twilio.posts()) == 3  # the first try and two retries
    assert task.status == S.FAILED
    assert "HTTP 503" in task.error_message and task.error_code == "twilio_20503"


def test_invalid_number_400_fails_at_once(fake_twilio, django_capture_on_commit_callbacks):
    fake_twilio.script = [Scripted(400, 21211, "The 'To' number is not a valid phone number.")]
    task = send(django_capture_on_commit_callbacks, to="+14155550100", body="hi")
    assert len(fake_twilio.posts()) == 1
    assert (task.status, task.error_code) == (S.FAILED, "21211")
    assert task.error_message == "the 'To' number is not a valid phone number"
    assert Message.objects.get(task=task).status == "failed"


def test_a_task_with_an_invalid_number_fails_at_once_without_a_provider_call(
    fake_twilio, django_capture_on_commit_callbacks
):
    """Intake refuses such a number; a task made another way (admin, a chain) must not be
    retried until it dead-letters."""
    task = send(django_capture_on_commit_callbacks, to="+1415555", body="hi")
    assert (task.status, task.error_code, task.attempts) == (S.FAILED, "invalid_number", 1)
    assert "not a valid phone number" in task.error_message or "not a phone number" in task.error_message
    assert fake_twilio.posts() == []


def test_21610_at_send_opts_the_contact_out_of_sms(fake_twilio, django_capture_on_commit_callbacks):
    fake_twilio.script = [Scripted(400, 21610, "Attempt to send to unsubscribed recipient")]
    task = send(django_capture_on_commit_callbacks, to="+14155550100", body="hi")
    assert task.error_code == "21610"
    consent = Consent.objects.get(contact__phone="+14155550100", channel="sms")
    assert (consent.status, consent.source) == ("opted_out", "provider_error")


def test_opted_out_contact_fails_without_calling_twilio(fake_twilio, django_capture_on_commit_callbacks):
    from dossiers.services import consent_set

    contact = Contact.objects.create(phone="+14155550100")
    consent_set(contact_id=contact.id, channel="sms", status="opted_out", source="keyword")
    task = send(django_capture_on_commit_callbacks, to="+14155550100", body="hi")
    assert (task.status, task.error_code) == (S.FAILED, "opted_out")
    assert fake_twilio.posts() == []


def test_whatsapp_free_text_outside_the_window_fails_locally(fake_twilio, django_capture_on_commit_callbacks):
    task = send(django_capture_on_commit_callbacks, "whatsapp.send", to="+14155550100", body="hi")
    assert (task.status, task.error_code) == (S.FAILED, "whatsapp_window_closed")
    assert "24-hour window" in task.error_message and "approved template" in task.error_message
    assert fake_twilio.posts() == []


def test_whatsapp_free_text_inside_the_window_is_sent(fake_twilio, django_capture_on_commit_callbacks):
    from django.utils import timezone

    Contact.objects.create(phone="+14155550100", last_inbound_whatsapp_at=timezone.now())
    task = send(django_capture_on_commit_callbacks, "whatsapp.send", to="+14155550100", body="hi")
    assert task.status == S.IN_PROGRESS
    assert fake_twilio.posts()[0].form["Body"] == ["hi"]


def test_prompt_body_is_written_by_the_content_generator(fake_twilio, django_capture_on_commit_callbacks):
    Contact.objects.create(phone="+14155550100", name="Ada")
    send(django_capture_on_commit_callbacks, to="+14155550100", prompt="your parcel arrives today")
    body = fake_twilio.posts()[0].form["Body"][0]
    assert body.startswith("Hi Ada, your parcel arrives today. [generated ")


def test_worker_lost_after_twilio_accepted_is_reconciled_not_resent(
    fake_twilio, django_capture_on_commit_callbacks
):
    """A worker died after Twilio's 201 but before our save: the retake finds the SID."""
    from agents.messaging import handlers
    from orchestrator.services import task_claim

    task = Task.objects.create(type="sms.send", channel="sms", status=S.QUEUED,
                               payload={"to": "+14155550100", "body": "only once"})  # fmt: skip
    claimed = task_claim(task_id=task.id, worker="w1")
    # What the dead worker left: the dossier row and the open attempt, and Twilio has the message.
    contact = Contact.objects.create(phone="+14155550100")
    Message.objects.create(task=task, contact=contact, channel="sms", direction="outbound", from_address="+15005550006",
                           to_address="+14155550100", body="only once", status="pending",
                           occurred_at=claimed.created_at)  # fmt: skip
    SendAttempt.objects.create(task=task, number=1)
    fake_twilio._create({"To": ["+14155550100"], "From": ["+15005550006"], "Body": ["only once"]})
    retaken = task_claim(task_id=task.id, worker="w2", redelivered=True)
    handlers.sms_send(retaken)
    task.refresh_from_db()
    assert fake_twilio.posts() == []  # no second message
    assert task.status == S.IN_PROGRESS and task.provider_id == fake_twilio.messages[0]["sid"]
    assert SendAttempt.objects.get(task=task, number=1).detail == "recovered after a lost worker"


def test_worker_lost_before_twilio_accepted_sends_again(fake_twilio):
    from agents.messaging import handlers
    from orchestrator.services import task_claim

    task = Task.objects.create(type="sms.send", channel="sms", status=S.QUEUED,
                               payload={"to": "+14155550100", "body": "hello"})  # fmt: skip
    claimed = task_claim(task_id=task.id, worker="w1")
    Message.objects.create(task=task, channel="sms", direction="outbound", from_address="+15005550006",
                           to_address="+14155550100", body="hello", status="pending",
                           occurred_at=claimed.created_at)  # fmt: skip
    SendAttempt.objects.create(task=task, number=1)  # died before Twilio answered
    handlers.sms_send(task_claim(task_id=task.id, worker="w2", redelivered=True))
    assert len(fake_twilio.posts()) == 1
    assert [r.method for r in fake_twilio.requests] == ["GET", "POST"]  # looked first, then sent
    assert list(SendAttempt.objects.filter(task=task).values_list("outcome", flat=True)) == [
        "retry",
        "accepted",
    ]


def test_sender_rate_limit_defers_a_send_instead_of_calling_twilio(
    fake_twilio, settings, django_capture_on_commit_callbacks
):
    from agents.messaging import handlers
    from orchestrator.errors import TransientError
    from orchestrator.services import task_claim

    settings.MESSAGING_RATE_PER_SECOND = 0.1  # one message per 10 s from this sender
    first = send(django_capture_on_commit_callbacks, to="+14155550100", body="one")
    assert first.status == S.IN_PROGRESS
    task = Task.objects.create(type="sms.send", channel="sms", status=S.QUEUED,
                               payload={"to": "+14155550101", "body": "two"})  # fmt: skip
    claimed = task_claim(task_id=task.id, worker="w")
    with pytest.raises(TransientError) as raised:
        handlers.sms_send(claimed)
    assert raised.value.code == "rate_limited"
    task.refresh_from_db()
    assert task.attempts == claimed.attempts == 0  # a deferral does not use up an attempt
    assert 9 < raised.value.retry_after <= 10  # the orchestrator retries no sooner than that
    assert [p.form["Body"] for p in fake_twilio.posts()] == [["one"]]


def test_short_rate_limit_waits_in_the_worker(fake_twilio, settings, django_capture_on_commit_callbacks):
    import time

    settings.MESSAGING_RATE_PER_SECOND = 20  # burst of 20, then one every 50 ms
    started = time.monotonic()
    tasks = [send(django_capture_on_commit_callbacks, to="+14155550100", body=f"m{i}") for i in range(22)]
    assert all(t.status == S.IN_PROGRESS for t in tasks)
    assert time.monotonic() - started >= 0.08  # the last two waited for tokens
