"""The status callback's fast lane (agents/messaging/ingress.py), as gunicorn calls it: a WSGI
environ in, a status and a body out. A signed, well-formed callback is buffered and answered
204 without Django; anything else reaches Django's view with its body intact and gets the
answer it always got."""

from __future__ import annotations

import io
import json
from urllib.parse import urlencode

import pytest
from django.core.handlers.wsgi import WSGIHandler
from twilio.request_validator import RequestValidator

from agents.common import webhook_buffer
from agents.common.models import WebhookEvent
from agents.messaging import callbacks
from agents.messaging.ingress import StatusCallbackIngress
from orchestrator.models import Task
from orchestrator.states import TaskStatus
from tests.messaging.conftest import PUBLIC, STATUS_URL, TOKEN, signed_post
from tests.messaging.test_status_webhook import callback, in_flight

pytestmark = pytest.mark.django_db
PATH = STATUS_URL.removeprefix(PUBLIC)
KIND = callbacks.STATUS_KIND


@pytest.fixture
def redis_buffer(buffered):
    callbacks._flag_seen_at = 1e18  # these tests run the drain themselves
    yield buffered


@pytest.fixture
def wsgi_keeps_the_test_connection():
    """Django's handler closes the database connection when a request finishes; the test's own
    transaction lives on it (Django's test client disconnects the same receiver)."""
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


class Django:
    """Stands for Django behind the fast lane: records what reached it."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    def __call__(self, environ, start_response):
        self.bodies.append(environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)))
        start_response("299 Django", [])
        return [b"django"]


def call(app, params: dict, *, query: str = "", signature: str | None = None, body: bytes | None = None,
         content_type: str = "application/x-www-form-urlencoded", remote: str = "127.0.0.1") -> tuple[str, bytes]:  # fmt: skip
    body = urlencode(params).encode() if body is None else body
    url = STATUS_URL + (f"?{query}" if query else "")
    environ = {
        "REQUEST_METHOD": "POST", "PATH_INFO": PATH, "QUERY_STRING": query, "CONTENT_TYPE": content_type,
        "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body), "SERVER_NAME": "testserver",
        "SERVER_PORT": "80", "HTTP_HOST": "testserver", "wsgi.url_scheme": "http", "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": remote,
        "HTTP_X_TWILIO_SIGNATURE": RequestValidator(TOKEN).compute_signature(url, params) if signature is None else signature,
    }  # fmt: skip
    status: list[str] = []
    out = b"".join(app(environ, lambda s, headers, exc_info=None: status.append(s)))
    return status[0], out


def test_a_signed_callback_is_buffered_and_answered_without_django(redis_buffer):
    django = Django()
    task = in_flight()
    status, out = call(StatusCallbackIngress(django), callback("delivered"), query=f"task={task.id}&ref=b:7")
    assert (status, out, django.bodies) == ("204 No Content", b"", [])
    assert webhook_buffer.pending("twilio", KIND) == 1
    assert callbacks.status_events_drain() == 1
    stored = WebhookEvent.objects.get()
    assert stored.payload[callbacks.TASK_KEY] == str(task.id) and stored.payload[callbacks.REF_KEY] == "b:7"
    assert Task.objects.get(id=task.id).status == TaskStatus.SUCCEEDED


def test_the_fast_lane_stores_what_the_view_stores(client, redis_buffer):
    first, second = in_flight(), in_flight(sid="SM" + "f" * 32, phone="+14155550101")
    call(StatusCallbackIngress(Django()), callback("sent"), query=f"task={first.id}&message=12")
    signed_post(client, f"{STATUS_URL}?task={second.id}&message=12", callback("sent", sid="SM" + "f" * 32))
    assert callbacks.status_events_drain() == 2
    fast, view = (
        WebhookEvent.objects.get(dedupe_key=f"status:{sid}:sent")
        for sid in (callbacks_sid(first), "SM" + "f" * 32)
    )
    assert {
        k: v for k, v in fast.payload.items() if k not in ("MessageSid", "SmsSid", callbacks.TASK_KEY)
    } == {k: v for k, v in view.payload.items() if k not in ("MessageSid", "SmsSid", callbacks.TASK_KEY)}
    assert fast.outcome == view.outcome


def callbacks_sid(task: Task) -> str:
    return task.provider_id


@pytest.mark.parametrize(
    "case",
    [
        {"signature": "bad"},  # Django's validator decides, and refuses: 403
        {"signature": ""},
        {"content_type": "application/json"},  # 415
        {"body": b"MessageSid=SM1&MessageSid=SM2&MessageStatus=sent"},  # a repeated field: QueryDict's rules
        {"body": b"MessageSid=SM%FF&MessageStatus=sent"},  # not UTF-8: 400
        {"params": {"MessageSid": "SM1", "MessageStatus": "exploded"}},  # unknown status: 400
        {"params": {"MessageSid": "SM1", "MessageStatus": "sent", "Body": "a\x00b"}},  # NUL: 400
        {"remote": "203.0.113.9"},  # test mode from another machine: Django's 403
    ],
)
def test_anything_else_reaches_django_with_its_body(redis_buffer, case):
    django = Django()
    params = case.get("params", callback("sent"))
    body = case.get("body") or urlencode(params).encode()
    status, out = call(StatusCallbackIngress(django), params, body=body,
                       **{k: v for k, v in case.items() if k not in ("params", "body")})  # fmt: skip
    assert (status, out) == ("299 Django", b"django")
    assert django.bodies == [body]
    assert webhook_buffer.pending("twilio", KIND) == 0


def test_refusals_are_djangos_answers(redis_buffer, wsgi_keeps_the_test_connection):
    app = StatusCallbackIngress(WSGIHandler())
    status, out = call(app, callback("sent"), signature="bad")
    assert status.startswith("403") and json.loads(out)["error"]["code"] == "invalid_signature"
    status, out = call(app, {**callback("sent"), "MessageStatus": "exploded", "SmsStatus": "exploded"})
    assert status.startswith("400") and "unknown MessageStatus" in json.loads(out)["error"]["message"]
    assert WebhookEvent.objects.count() == 0 and webhook_buffer.pending("twilio", KIND) == 0


def test_with_redis_away_django_stores_the_callback(settings, wsgi_keeps_the_test_connection):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    task = in_flight()
    status, _ = call(StatusCallbackIngress(WSGIHandler()), callback("delivered"), query=f"task={task.id}")
    assert status.startswith("204")
    assert WebhookEvent.objects.get().processed_at is None  # in the table; beat's periodic drain applies it


def test_the_served_application_has_the_fast_lane():
    from comms_platform.wsgi import application

    assert isinstance(application, StatusCallbackIngress)


def test_a_buffered_callback_needs_no_database(redis_buffer, monkeypatch, caplog):
    """PostgreSQL away: the fast lane still buffers, asks for a drain and answers 204 (the
    drain applies the callback once the database is back)."""
    from django.db import OperationalError, connections

    connection = connections["default"]  # the wrapper itself, not django.db's proxy

    def away():
        raise OperationalError("the database is away")

    callbacks._flag_seen_at = -1.0  # this callback asks for a drain
    monkeypatch.setattr(connection, "ensure_connection", away)
    monkeypatch.setattr(connection, "in_atomic_block", False)  # a gunicorn thread: autocommit
    status, _ = call(StatusCallbackIngress(Django()), callback("delivered"), query="ref=b:1")
    monkeypatch.undo()
    assert status == "204 No Content"
    assert webhook_buffer.pending("twilio", KIND) == 1
    assert "status drain not scheduled" not in caplog.text  # queued without asking the database
