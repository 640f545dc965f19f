"""The status webhook: signatures, de-duplication, out-of-order callbacks, error codes."""

import itertools
import os

import pytest

from agents.common.models import WebhookEvent
from dossiers.models import Consent, Contact, Message
from orchestrator.models import Task, TaskEvent
from orchestrator.states import TaskStatus
from tests.messaging.conftest import PUBLIC, STATUS_URL, TOKEN, signed_post
from tests.support.services import unavailable

pytestmark = pytest.mark.django_db
S = TaskStatus
SID = "SM" + "c" * 32


def in_flight(sid: str = SID, phone: str = "+14155550100") -> Task:
    """A task Twilio accepted: in progress with its SID on the task and the dossier message."""
    contact = Contact.objects.create(phone=phone)
    task = Task.objects.create(
        type="sms.send", channel="sms", status=S.IN_PROGRESS, provider_id=sid, contact=contact
    )
    Message.objects.create(task=task, contact=contact, channel="sms", direction="outbound", provider_sid=sid,
                           from_address="+15005550006", to_address=phone, status="queued",
                           occurred_at=task.created_at)  # fmt: skip
    return task


def callback(status: str, sid: str = SID, **extra) -> dict:
    return {"MessageSid": sid, "SmsSid": sid, "MessageStatus": status, "SmsStatus": status,
            "AccountSid": "AC" + "0" * 31 + "1", "From": "+15005550006", "To": "+14155550100",
            "ApiVersion": "2010-04-01", **extra}  # fmt: skip


def url_for(task: Task) -> str:
    return f"{STATUS_URL}?task={task.id}"


def test_delivered_succeeds_the_task(client):
    task = in_flight()
    response = signed_post(client, url_for(task), callback("delivered"))
    assert response.status_code == 204
    task.refresh_from_db()
    assert task.status == S.SUCCEEDED
    assert Message.objects.get(task=task).status == "delivered"
    assert WebhookEvent.objects.get().outcome == "delivered"


def test_previous_token_is_accepted_during_rotation(client, settings):
    old = "f" * 32
    settings.TWILIO_PREVIOUS_AUTH_TOKENS = [old]
    task = in_flight()
    assert signed_post(client, url_for(task), callback("sent"), token=old).status_code == 204


@pytest.mark.parametrize(
    ("case", "kwargs"),
    [
        ("wrong token", {"token": "e" * 32}),
        ("missing header", {"signature": ""}),
        ("signed for another host", {"url": "https://evil.example.com/webhooks/twilio/messaging/status/"}),
        ("signed for another query", {"query": "?task=00000000-0000-0000-0000-000000000000"}),
    ],
)
def test_bad_signatures_are_403_and_store_nothing(client, case, kwargs):
    from prometheus_client import REGISTRY

    task = in_flight()
    params = callback("delivered")
    before = (
        REGISTRY.get_sample_value(
            "comms_webhooks_total", {"provider": "twilio", "kind": "messaging_status", "result": "refused"}
        )
        or 0
    )
    signed_url = kwargs.get("url", url_for(task))
    if "query" in kwargs:
        signed_url = f"{STATUS_URL}{kwargs['query']}"
    from twilio.request_validator import RequestValidator

    signature = kwargs.get("signature")
    if signature is None:
        signature = RequestValidator(kwargs.get("token", TOKEN)).compute_signature(signed_url, params)
    headers = {"HTTP_X_TWILIO_SIGNATURE": signature} if signature else {}
    response = client.post(url_for(task).removeprefix(PUBLIC), params, **headers)
    assert response.status_code == 403, case
    assert WebhookEvent.objects.count() == 0
    task.refresh_from_db()
    assert task.status == S.IN_PROGRESS
    after = REGISTRY.get_sample_value(
        "comms_webhooks_total", {"provider": "twilio", "kind": "messaging_status", "result": "refused"}
    )
    assert after == before + 1


def test_proxy_host_does_not_matter_public_url_does(client, settings):
    """Behind Render's proxy the request reaches an internal host; we verify against PUBLIC_BASE_URL."""
    settings.ALLOWED_HOSTS = ["10.0.0.7"]
    task = in_flight()
    from twilio.request_validator import RequestValidator

    params = callback("sent")
    signature = RequestValidator(TOKEN).compute_signature(url_for(task), params)
    response = client.post(url_for(task).removeprefix(PUBLIC), params, HTTP_X_TWILIO_SIGNATURE=signature,
                           HTTP_HOST="10.0.0.7:10000", HTTP_X_FORWARDED_PROTO="https")  # fmt: skip
    assert response.status_code == 204


DELIVERED_EVENTS = ["queued", "sending", "sent", "delivered"]


@pytest.mark.parametrize("order", list(itertools.permutations(DELIVERED_EVENTS)))
def test_every_order_with_duplicates_ends_succeeded(client, order):
    task = in_flight()
    for status in [*order, order[0], order[-1]]:  # and two duplicates
        assert signed_post(client, url_for(task), callback(status)).status_code == 204
    task.refresh_from_db()
    assert task.status == S.SUCCEEDED
    assert Message.objects.get(task=task).status == "delivered"
    assert WebhookEvent.objects.filter(kind="messaging_status").count() == 4  # duplicates stored once
    # The only applied transition is in_progress → succeeded; late ones are recorded, not applied.
    applied = list(TaskEvent.objects.filter(task=task, applied=True).values_list("to_status", flat=True))
    assert applied == [S.SUCCEEDED]


@pytest.mark.parametrize("order", list(itertools.permutations(["queued", "sent", "undelivered"])))
def test_undelivered_in_any_order_fails_with_the_readable_reason(client, order):
    task = in_flight()
    for status in order:
        extra = {"ErrorCode": "30006", "ErrorMessage": "Landline"} if status == "undelivered" else {}
        signed_post(client, url_for(task), callback(status, **extra))
    task.refresh_from_db()
    assert (task.status, task.error_code) == (S.FAILED, "30006")
    assert task.error_message == "the destination is a landline or its carrier cannot receive SMS"
    message = Message.objects.get(task=task)
    assert (message.status, message.error_code) == ("undelivered", "30006")


def test_21610_callback_opts_the_contact_out_of_sms(client):
    task = in_flight()
    signed_post(client, url_for(task), callback("failed", ErrorCode="21610"))
    consent = Consent.objects.get(contact=task.contact, channel="sms")
    assert (consent.status, consent.source) == ("opted_out", "provider_error")


def test_callback_before_the_sid_was_saved_finds_the_task_by_its_url(client):
    """The worker may die (or be slow) after Twilio accepted: the task id in the URL still links them."""
    task = in_flight()
    Message.objects.filter(task=task).update(provider_sid=None)
    Task.objects.filter(id=task.id).update(status=S.DISPATCHED, provider_id="")
    signed_post(client, url_for(task), callback("sent", sid="SM" + "d" * 32))
    task.refresh_from_db()
    assert (task.status, task.provider_id) == (S.IN_PROGRESS, "SM" + "d" * 32)
    assert Message.objects.get(task=task).provider_sid == "SM" + "d" * 32


def test_unknown_status_is_400(client):
    task = in_flight()
    response = signed_post(client, url_for(task), callback("exploded"))
    assert response.status_code == 400
    assert WebhookEvent.objects.count() == 0


def test_intake_is_one_insert_and_a_worker_applies_it(
    client,
    settings,
    django_assert_num_queries,
    django_assert_max_num_queries,
    django_capture_on_commit_callbacks,
):
    """With Redis the request stores the event (one INSERT) and asks for one drain; the drain applies it."""
    from agents.messaging import services

    settings.REDIS_URL = os.environ.get("REDIS_URL") or unavailable("needs Redis (set REDIS_URL=redis://…)")
    services._redis().delete(services.DRAIN_FLAG)
    services._flag_seen_at = -1.0
    first, second = in_flight(), in_flight(sid="SM" + "f" * 32, phone="+14155550101")
    with django_capture_on_commit_callbacks() as scheduled:
        with django_assert_num_queries(1):
            assert signed_post(client, url_for(first), callback("delivered")).status_code == 204
        signed_post(client, url_for(second), callback("delivered", sid="SM" + "f" * 32))
    assert len(scheduled) == 1  # one drain for both
    first.refresh_from_db()
    assert first.status == S.IN_PROGRESS  # not applied yet
    with django_assert_max_num_queries(40):
        assert services.status_events_drain() == 2
    assert set(Task.objects.values_list("status", flat=True)) == {S.SUCCEEDED}
    assert list(WebhookEvent.objects.values_list("outcome", flat=True)) == ["delivered", "delivered"]
    assert not services._redis().exists(services.DRAIN_FLAG)  # the next callback schedules a drain again
