"""The status webhook: signatures, de-duplication, out-of-order callbacks, error codes."""

import itertools
import os

import pytest
from django.core.exceptions import BadRequest

from agents.common.models import WebhookEvent
from dossiers.models import Consent, Contact, Message
from orchestrator.models import Task, TaskEvent
from orchestrator.states import TaskStatus
from tests.messaging.conftest import FORM, PUBLIC, STATUS_URL, TOKEN, signed_post
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


@pytest.mark.parametrize("encoding", ["urlencoded", "multipart"])
@pytest.mark.parametrize(
    ("case", "kwargs"),
    [
        ("wrong token", {"token": "e" * 32}),
        ("missing header", {"signature": ""}),
        ("signed for another host", {"url": "https://evil.example.com/webhooks/twilio/messaging/status/"}),
        ("signed for another query", {"query": "?task=00000000-0000-0000-0000-000000000000"}),
        ("signed over other values", {"params": {"MessageStatus": "sent"}}),
        ("signed over a missing value", {"params": {"ErrorCode": "30006"}}),
        (
            "signed for another port",
            {"url": "https://comms.example.com:8443/webhooks/twilio/messaging/status/"},
        ),
    ],
)
def test_bad_signatures_are_403_and_store_nothing(client, case, kwargs, encoding):
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
    if "url" in kwargs:
        signed_url += f"?task={task.id}"
    if "query" in kwargs:
        signed_url = f"{STATUS_URL}{kwargs['query']}"
    from twilio.request_validator import RequestValidator

    signature = kwargs.get("signature")
    if signature is None:
        signed_params = {**params, **kwargs.get("params", {})}
        signature = RequestValidator(kwargs.get("token", TOKEN)).compute_signature(signed_url, signed_params)
    response = signed_post(
        client, url_for(task), params, signature=signature, multipart=encoding == "multipart"
    )
    assert response.status_code == 403, case
    assert response.json()["error"]["code"] == "invalid_signature"
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


@pytest.fixture
def validator_calls(monkeypatch):
    """How often Twilio's validator computed a signature and ran its full validate()."""
    from twilio.request_validator import RequestValidator

    calls = {"compute_signature": 0, "validate": 0}
    for name in calls:
        original = getattr(RequestValidator, name)

        def counted(self, *args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(RequestValidator, name, counted)
    return calls


def test_twilio_signed_form_is_accepted_with_one_hmac(client, validator_calls):
    from twilio.request_validator import RequestValidator

    task = in_flight()
    params = callback("delivered")
    signature = RequestValidator(TOKEN).compute_signature(url_for(task), params)
    validator_calls.update(compute_signature=0, validate=0)  # not the test's own signing
    assert signed_post(client, url_for(task), params, signature=signature).status_code == 204
    # The fast path: one HMAC over the URL as configured; validate() (two HMACs, two URL
    # parses) is not needed when the signature matches.
    assert validator_calls == {"compute_signature": 1, "validate": 0}
    assert WebhookEvent.objects.get().payload["MessageStatus"] == "delivered"


def test_hmac_sha256_signature_from_a_webhooks_rule_is_accepted(client):
    from twilio.request_validator import HMAC_SHA256, RequestValidator

    task = in_flight()
    params = callback("sent")
    header = {"HTTP_X_TWILIO_WEBHOOKS_SIGNATURE_SETTINGS": "key=webhooks_sharedkey_1,algorithm=HMAC_SHA256"}
    signature = RequestValidator(TOKEN).compute_signature(url_for(task), params, HMAC_SHA256)
    assert signed_post(client, url_for(task), params, signature=signature, **header).status_code == 204
    # An SHA-1 signature where the header says SHA-256 is refused.
    sha1 = RequestValidator(TOKEN).compute_signature(url_for(task), callback("delivered"))
    assert (
        signed_post(client, url_for(task), callback("delivered"), signature=sha1, **header).status_code == 403
    )


def test_signature_over_the_url_with_its_default_port_still_passes(client, validator_calls):
    """PUBLIC_BASE_URL has no port; Twilio may sign https://host:443/…: validate() tries both."""
    from twilio.request_validator import RequestValidator

    task = in_flight()
    params = callback("delivered")
    with_port = url_for(task).replace(PUBLIC, "https://comms.example.com:443")
    signature = RequestValidator(TOKEN).compute_signature(with_port, params)
    response = signed_post(client, url_for(task), params, signature=signature)
    assert response.status_code == 204
    assert validator_calls["validate"] == 1  # the fast path missed; the full check found it
    assert WebhookEvent.objects.count() == 1


def test_repeated_parameter_is_signed_over_every_value(client):
    """A name that repeats: parsed by Django's QueryDict, signed (as Twilio does) over all values."""
    from django.http import QueryDict
    from twilio.request_validator import RequestValidator

    task = in_flight()
    params = {**callback("delivered"), "MediaUrl": ["https://a.example/1", "https://a.example/2"]}
    signed_over = QueryDict(mutable=True)
    for name, value in params.items():
        signed_over.setlist(name, value if isinstance(value, list) else [value])
    signature = RequestValidator(TOKEN).compute_signature(url_for(task), signed_over)
    assert signed_post(client, url_for(task), params, signature=signature).status_code == 204
    # Stored as QueryDict.dict() has it: the last value of the repeated name.
    assert WebhookEvent.objects.get().payload["MediaUrl"] == "https://a.example/2"
    # A signature over the last value only does not cover the body that was sent.
    last_only = RequestValidator(TOKEN).compute_signature(url_for(task), signed_over.dict())
    response = signed_post(client, url_for(task), {**params, "MessageStatus": "sent"}, signature=last_only)
    assert response.status_code == 403


def test_form_params_parse_repeated_names_with_django():
    from django.http import QueryDict
    from django.test import RequestFactory

    from agents.common.twilio_security import form_dict, form_params

    request = RequestFactory().post("/", "To=%2B1415&Tag=a&Tag=b", content_type=FORM)
    params = form_params(request)
    assert isinstance(params, QueryDict)
    assert params.getlist("Tag") == ["a", "b"]
    assert form_dict(request) == {"To": "+1415", "Tag": "b"}
    assert form_params(request) is params  # parsed once per request


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        (FORM, b"Body=h%C3%A9llo+w%C3%B6rld+%2B1&To=%2B14155550100&Empty=&Flag"),
        (FORM, "Body=héllo wörld 👋".encode()),
        (FORM, b"Body=%E9t%E9&Bad=%ZZ&=nameless&&a=1;b=2"),
        (FORM, b"Body=%00"),
        (FORM, b""),
        (f"{FORM}; charset=utf-8", b"Body=%C3%A9"),
        (
            "multipart/form-data; boundary=B",
            b'--B\r\nContent-Disposition: form-data; name="Body"\r\n\r\nhi\r\n--B--\r\n',
        ),
        # Not UTF-8: raw bytes (Django reads them as ISO-8859-1), a declared charset (Django
        # refuses the form with a 400). The fast parse must leave both to Django.
        (FORM, b"Body=\xe9t\xe9"),
        (f"{FORM}; charset=ISO-8859-1", b"Body=%E9"),
    ],
)
def test_form_dict_reads_a_form_as_django_does(content_type, body):
    from django.test import RequestFactory

    from agents.common.twilio_security import form_dict

    def read(parse):
        try:
            return parse(RequestFactory().post("/", body, content_type=content_type))
        except BadRequest as exc:
            return type(exc)

    assert read(form_dict) == read(lambda request: request.POST.dict())


def test_body_that_is_not_utf8_is_refused_with_400_before_anything_is_stored(client):
    """Raw ISO-8859-1 bytes (never Twilio's): a 400 that says so, nothing stored, even signed."""
    from urllib.parse import urlencode

    from twilio.request_validator import RequestValidator

    task = in_flight()
    params = callback("delivered", ErrorMessage="été")
    signature = RequestValidator(TOKEN).compute_signature(url_for(task), params)
    body = (
        urlencode({k: v for k, v in params.items() if k != "ErrorMessage"}).encode()
        + b"&ErrorMessage=\xe9t\xe9"
    )
    response = client.post(url_for(task).removeprefix(PUBLIC), body, content_type=FORM,
                           HTTP_X_TWILIO_SIGNATURE=signature)  # fmt: skip
    assert response.status_code == 400
    assert "UTF-8" in response.json()["error"]["message"]
    assert not WebhookEvent.objects.exists()


def test_json_body_with_any_signature_is_415_not_500(client):
    task = in_flight()
    response = client.post(url_for(task).removeprefix(PUBLIC), b'{"MessageSid": "SM1"}',
                           content_type="application/json", HTTP_X_TWILIO_SIGNATURE="anything")  # fmt: skip
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"
    assert not WebhookEvent.objects.exists()


def test_webhook_posts_need_no_csrf_token():
    """Twilio sends no CSRF token: with CSRF checks on, a signed callback is taken and a bad
    signature gets the webhook's own JSON 403, never Django's CSRF failure page."""
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    task = in_flight()
    assert signed_post(strict, url_for(task), callback("delivered")).status_code == 204
    refused = signed_post(strict, url_for(task), callback("failed"), token="e" * 32)
    assert refused.status_code == 403
    assert refused["Content-Type"] == "application/json"
    assert refused.json()["error"]["code"] == "invalid_signature"
    assert WebhookEvent.objects.count() == 1


def test_every_webhook_view_is_csrf_exempt():
    from django.urls import get_resolver

    from agents.common.webhooks import WebhookView

    def views(resolver):
        for pattern in resolver.url_patterns:
            if hasattr(pattern, "url_patterns"):
                yield from views(pattern)
            else:
                yield pattern.callback

    webhooks = [v for v in views(get_resolver()) if issubclass(getattr(v, "view_class", object), WebhookView)]
    assert len(webhooks) >= 2  # messaging status and inbound at least
    assert all(getattr(v, "csrf_exempt", False) for v in webhooks), [v.view_class for v in webhooks]


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
    """With Redis the request buffers the event (no database statement: one XADD) and asks for
    one drain; the drain stores it (one row per callback) and applies it."""
    from agents.common import webhook_buffer
    from agents.messaging import callbacks as services

    settings.REDIS_URL = os.environ.get("REDIS_URL") or unavailable("needs Redis (set REDIS_URL=redis://…)")
    services._redis().delete(services.DRAIN_FLAG)
    services._flag_seen_at = -1.0
    first, second = in_flight(), in_flight(sid="SM" + "f" * 32, phone="+14155550101")
    with django_capture_on_commit_callbacks() as scheduled:
        with django_assert_num_queries(0):
            assert signed_post(client, url_for(first), callback("delivered")).status_code == 204
        signed_post(client, url_for(second), callback("delivered", sid="SM" + "f" * 32))
        # The same callback again (Twilio retries): buffered, stored once.
        signed_post(client, url_for(second), callback("delivered", sid="SM" + "f" * 32))
    assert len(scheduled) == 1  # one drain for all
    first.refresh_from_db()
    assert first.status == S.IN_PROGRESS  # not applied yet
    assert WebhookEvent.objects.count() == 0
    assert webhook_buffer.pending("twilio", services.STATUS_KIND) == 3
    with django_assert_max_num_queries(40):
        assert services.status_events_drain() == 2
    assert set(Task.objects.values_list("status", flat=True)) == {S.SUCCEEDED}
    assert list(WebhookEvent.objects.values_list("outcome", flat=True)) == ["delivered", "delivered"]
    assert not services._redis().exists(services.DRAIN_FLAG)  # the next callback schedules a drain again
    assert webhook_buffer.pending("twilio", services.STATUS_KIND) == 0  # acknowledged and deleted


def _store_mixed_batch() -> list[Task]:
    """Callbacks of every kind in one batch: a whole delivered message (out of order, with a
    duplicate status), an undelivered one with its error, an opt-out (21610), an unknown SID,
    an inbound status, an unknown status, and one found only by the task id of its URL."""
    from agents.common.webhooks import store_once
    from agents.messaging import callbacks as services

    a, b, c = (
        in_flight(),
        in_flight(sid="SM" + "b" * 32, phone="+14155550111"),
        in_flight(sid="SM" + "d" * 32, phone="+14155550122"),
    )
    hinted = in_flight(sid="SM" + "e" * 32, phone="+14155550133")
    Message.objects.filter(task=hinted).update(provider_sid=None)
    events = [
        (a, callback("delivered")), (a, callback("queued")), (a, callback("sent")),
        (b, callback("undelivered", sid="SM" + "b" * 32, ErrorCode="30006")),
        (c, callback("failed", sid="SM" + "d" * 32, ErrorCode="21610")),
        (a, callback("sent", sid="SM" + "0" * 32)),  # nobody's SID, no task id: unknown
        (a, callback("received")), (a, callback("frobnicated")),
        (hinted, callback("sent", sid="SM" + "e" * 32)),
    ]  # fmt: skip
    for n, (task, event) in enumerate(events):
        hint = "" if event["MessageSid"] == "SM" + "0" * 32 else str(task.id)
        store_once(provider="twilio", kind=services.STATUS_KIND, dedupe_key=f"k{n}",
                   payload={**event, services.TASK_KEY: hint})  # fmt: skip
    return [a, b, c, hinted]


def _records_of(tasks: list[Task]) -> tuple:
    outcomes = list(WebhookEvent.objects.order_by("id").values_list("outcome", flat=True))
    rows = [
        (t.status, t.error_code, t.provider_id)
        for t in Task.objects.filter(id__in=[t.id for t in tasks]).order_by("provider_id")
    ]
    messages = sorted(Message.objects.values_list("status", "error_code", "provider_sid"))
    events = [
        list(
            TaskEvent.objects.filter(task=t)
            .order_by("id")
            .values_list("from_status", "to_status", "applied", "details")
        )
        for t in tasks
    ]
    consents = sorted(Consent.objects.values_list("channel", "status", "source"))
    return outcomes, rows, messages, events, consents  # fmt: skip


def test_a_drain_batch_is_set_based_and_records_what_one_at_a_time_does(
    django_assert_max_num_queries, caplog
):
    from agents.messaging import callbacks as services

    tasks = _store_mixed_batch()
    # One at a time these take ~70 queries; set-based: ~38 for this batch of nine callbacks with
    # eight different outcomes (one UPDATE of the stored events per outcome), 7 of them the
    # opt-out's consent write and 4 the drain's last look at an empty table. What it costs does
    # not grow with the batch: see the next test.
    with django_assert_max_num_queries(40):
        assert services.status_events_drain() == 9
    assert "batch failed" not in caplog.text
    batched = _records_of(tasks)
    assert batched[0] == ["delivered", "queued:stale", "sent:stale", "undelivered", "failed",
                          "unknown_message", "ignored", "error", "sent:stale"]  # fmt: skip

    for model in (TaskEvent, WebhookEvent, Consent, Message, Task, Contact):
        model.objects.all().delete()
    tasks = _store_mixed_batch()
    for record in WebhookEvent.objects.order_by("id"):
        record.outcome = services._apply_stored(record)
        record.save(update_fields=["outcome"])
    assert _records_of(tasks) == batched


@pytest.mark.parametrize("count", [10, 150])
def test_a_drain_costs_the_same_statements_for_ten_messages_or_a_hundred_and_fifty(
    count, django_assert_max_num_queries
):
    """A broadcast's messages (no task): sent + delivered for each, buffered or stored, drained
    in a fixed number of statements however many there are (no statement per message)."""
    from agents.common.webhooks import store_once
    from agents.messaging import callbacks as services

    contact = Contact.objects.create(phone="+14155550100")
    sids = [f"SM{n:032x}" for n in range(count)]
    Message.objects.bulk_create(
        Message(contact=contact, channel="sms", direction="outbound", provider_sid=sid, to_address="+14155550100",
                from_address="+15005550006", status="queued", occurred_at=contact.created_at)
        for sid in sids
    )  # fmt: skip
    for sid in sids:
        for status in ("sent", "delivered"):
            store_once(provider="twilio", kind=services.STATUS_KIND, dedupe_key=f"status:{sid}:{status}",
                       payload=callback(status, sid=sid))  # fmt: skip
    with django_assert_max_num_queries(16):
        assert services.status_events_drain(batch=400) == 2 * count
    assert set(Message.objects.values_list("status", flat=True)) == {"delivered"}
    assert set(WebhookEvent.objects.values_list("outcome", flat=True)) == {"sent", "delivered"}
    assert not WebhookEvent.objects.filter(processed_at__isnull=True).exists()


@pytest.mark.parametrize("order", [("undelivered", "delivered"), ("delivered", "undelivered")])
def test_conflicting_finals_in_either_order_end_delivered_and_succeeded(client, order):
    """The documented rule (orchestrator.services.FINAL_STATUS_RULE): the provider's highest-ranked
    final status wins, for the task and the dossier message alike; a success keeps no error."""
    task = in_flight()
    for status in order:
        extra = {"ErrorCode": "30003", "ErrorMessage": "Unreachable"} if status == "undelivered" else {}
        assert signed_post(client, url_for(task), callback(status, **extra)).status_code == 204
    task.refresh_from_db()
    message = Message.objects.get(task=task)
    assert (task.status, task.error_code, task.error_message) == (S.SUCCEEDED, "", "")
    assert (message.status, message.error_code, message.error_message) == ("delivered", "", "")
    if order[0] == "undelivered":
        event = TaskEvent.objects.get(task=task, to_status=S.SUCCEEDED)
        assert event.applied and event.details["superseded"] == S.FAILED


@pytest.mark.parametrize("order", [("undelivered", "delivered"), ("delivered", "undelivered")])
def test_conflicting_finals_drained_in_one_batch_end_the_same(order):
    from agents.common.webhooks import store_once
    from agents.messaging import callbacks as services

    task = in_flight()
    for status in order:
        event = {
            **callback(status, ErrorCode="30003" if status == "undelivered" else ""),
            services.TASK_KEY: str(task.id),
        }
        store_once(
            provider="twilio", kind=services.STATUS_KIND, dedupe_key=f"status:{SID}:{status}", payload=event
        )
    assert services.status_events_drain() == 2
    task.refresh_from_db()
    assert (task.status, task.error_code) == (S.SUCCEEDED, "")
    assert Message.objects.get(task=task).status == "delivered"


def test_cancelled_is_never_superseded_by_a_late_delivery(client):
    task = in_flight()
    Task.objects.filter(id=task.id).update(status=S.CANCELLED, error_code="cancelled")
    signed_post(client, url_for(task), callback("delivered"))
    task.refresh_from_db()
    assert task.status == S.CANCELLED


def test_attempts_left_open_are_closed_once_their_task_ended():
    from agents.messaging.models import SendAttempt
    from agents.messaging.sending import attempts_close_open

    delivered, dead = in_flight(), in_flight(sid="SM" + "d" * 32, phone="+14155550111")
    running = in_flight(sid="SM" + "e" * 32, phone="+14155550112")
    Task.objects.filter(id=delivered.id).update(status=S.SUCCEEDED)
    Task.objects.filter(id=dead.id).update(status=S.FAILED, error_code="dead_letter")
    for task in (delivered, dead, running):
        SendAttempt.objects.create(task=task, number=1)
    assert attempts_close_open() == 2
    outcomes = dict(SendAttempt.objects.values_list("task_id", "outcome"))
    assert outcomes == {delivered.id: "accepted", dead.id: "abandoned", running.id: "started"}
    assert not SendAttempt.objects.filter(outcome__in=["accepted", "abandoned"], finished_at=None).exists()
    assert attempts_close_open() == 0
