"""The live console's guarantees that need no browser: socket tickets (who, from where,
once), the read-only task record, hang-up through the orchestrator's action hook, the
recorded Retry and Cancel, readable event details."""

from __future__ import annotations

import json
import time

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.core import signing
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone

from agents.voice import links
from agents.voice.providers.simulated import hang_up_requested
from comms_platform.asgi import application
from dashboard import live_auth
from dossiers.models import AuditLog, Call
from orchestrator.models import Task, TaskEvent
from orchestrator.services import task_create, task_transition
from tests.dashboard.conftest import inbound
from tests.fakes.twilio_calls import FakeTwilioCalls
from tests.support.services import unavailable
from tests.voice.conftest import twilio_sign

pytestmark = pytest.mark.usefixtures("console_types")

PAGE = "http://127.0.0.1:8000"  # PUBLIC_BASE_URL in test mode: a trusted page origin


def ticket_for(client, path: str, *, host: str = "127.0.0.1:8000") -> tuple[int, dict]:
    response = client.get(reverse("dashboard:live-ticket"), {"path": path}, HTTP_HOST=host)
    return response.status_code, response.json() if response["Content-Type"] == "application/json" else {}


def open_socket(path: str, query: str, origin: str = PAGE) -> tuple[bool, int | None]:
    """Through the project's real ASGI application (the ticket middleware and the routes)."""

    async def run():
        communicator = WebsocketCommunicator(application, f"{path}?{query}", headers=[(b"origin", origin.encode()),
                                                                                       (b"host", b"rt.example.com")])  # fmt: skip
        connected, code = await communicator.connect(timeout=10)
        if connected:
            await communicator.disconnect()
        return connected, code

    return async_to_sync(run)()


def query_of(url: str) -> str:
    return url.split("?", 1)[1]


# --- tickets -------------------------------------------------------------------------------


def test_the_web_service_mints_a_ticket_url_on_the_realtime_host(staff_client, settings):
    settings.PUBLIC_WS_BASE_URL = "wss://rt.example.com"
    status, body = ticket_for(staff_client, "/ws/inbox/")
    assert status == 200
    assert body["url"].startswith("wss://rt.example.com/ws/inbox/?ticket=")
    assert body["expires_in"] == settings.CONSOLE_WS_TICKET_TTL_SECONDS


def test_a_ticket_opens_its_socket_once(staff_client):
    _, body = ticket_for(staff_client, "/ws/inbox/")
    assert open_socket("/ws/inbox/", query_of(body["url"])) == (True, None)
    # The same URL again (copied from a log, a proxy, the browser's history): refused.
    connected, code = open_socket("/ws/inbox/", query_of(body["url"]))
    assert not connected and code == 4403


def test_a_socket_without_a_ticket_or_with_a_forged_one_is_refused(olivia):
    assert open_socket("/ws/inbox/", "") == (False, 4403)
    forged = signing.dumps({"u": str(olivia.pk), "h": olivia.get_session_auth_hash(), "p": "/ws/inbox/",
                            "o": PAGE, "n": "x"}, salt="another-salt")  # fmt: skip
    assert open_socket("/ws/inbox/", f"ticket={forged}") == (False, 4403)


def test_a_socket_from_another_origin_is_refused(staff_client):
    _, body = ticket_for(staff_client, "/ws/inbox/")
    connected, code = open_socket("/ws/inbox/", query_of(body["url"]), origin="https://evil.example.net")
    assert not connected and code == 4403


def test_a_ticket_minted_on_an_untrusted_page_origin_is_refused(staff_client):
    # Host header accepted by ALLOWED_HOSTS, but not a trusted page origin of the console.
    _, body = ticket_for(staff_client, "/ws/inbox/", host="localhost")
    connected, code = open_socket("/ws/inbox/", query_of(body["url"]), origin="http://localhost")
    assert not connected and code == 4403


def test_a_ticket_is_bound_to_its_socket_path(staff_client):
    _, body = ticket_for(staff_client, "/ws/inbox/")
    connected, code = open_socket("/ws/calls/", query_of(body["url"]))
    assert not connected and code == 4403


def test_an_expired_ticket_is_refused(staff_client, settings):
    _, body = ticket_for(staff_client, "/ws/inbox/")
    settings.CONSOLE_WS_TICKET_TTL_SECONDS = 1
    time.sleep(2.1)
    assert open_socket("/ws/inbox/", query_of(body["url"])) == (False, 4403)


def test_a_password_change_voids_the_ticket(staff_client, olivia):
    _, body = ticket_for(staff_client, "/ws/inbox/")
    olivia.set_password("a-new-password-456")
    olivia.save()
    assert open_socket("/ws/inbox/", query_of(body["url"])) == (False, 4403)


def test_staff_without_the_console_permission_gets_no_ticket_and_no_socket(client, django_user_model):
    clerk = django_user_model.objects.create_user("clerk", password="pw-clerk-123", is_staff=True)
    client.force_login(clerk)
    status, body = ticket_for(client, "/ws/inbox/")
    assert status == 403 and "may not use the live console" in body["detail"]
    # Even with a ticket minted for them (say, before the permission was withdrawn).
    ticket = live_auth.ticket_mint(user=clerk, path="/ws/inbox/", origin=PAGE)
    assert open_socket("/ws/inbox/", f"ticket={ticket}") == (False, 4403)


def test_a_ticket_for_an_unknown_socket_is_a_clear_400(staff_client):
    status, body = ticket_for(staff_client, "/ws/voice/relay/x/")
    assert status == 400 and "path must be one of the console's sockets" in body["detail"]


def test_an_anonymous_page_gets_no_ticket(client):
    response = client.get(reverse("dashboard:live-ticket"), {"path": "/ws/inbox/"})
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


# --- the task record ---------------------------------------------------------------------------


def finished_task(ada) -> Task:
    task, _ = task_create(type="sms.send", payload={"to": ada.phone, "body": "Your order shipped"},
                          contact_id=ada.pk)  # fmt: skip
    task_transition(
        task_id=task.id, to="failed", actor="webhook", error_code="30003", error_message="unreachable"
    )
    return task


def test_the_admin_refuses_to_change_a_finished_task(staff_client, ada):
    task = finished_task(ada)
    url = reverse("admin:orchestrator_task_change", args=[task.pk])
    page = staff_client.get(url)
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    response = staff_client.post(url, {"payload": '{"to": "+1", "body": "edited"}', "status": "succeeded"})
    assert response.status_code == 403
    assert "this task is finished: its record is read-only" in response.content.decode()
    task.refresh_from_db()
    assert task.payload["body"] == "Your order shipped" and task.status == "failed"


def test_the_admin_refuses_to_delete_a_task(staff_client, ada):
    task = finished_task(ada)
    response = staff_client.post(reverse("admin:orchestrator_task_delete", args=[task.pk]), {"post": "yes"})
    assert response.status_code == 403
    assert "Tasks cannot be deleted in the admin" in response.content.decode()
    assert Task.objects.filter(pk=task.pk).exists()
    changelist = staff_client.get(reverse("admin:orchestrator_task_changelist")).content.decode()
    assert "delete_selected" not in changelist


def test_retry_and_cancel_leave_an_event_and_an_audit_entry(staff_client, ada):
    task = finished_task(ada)
    response = staff_client.post(reverse("admin:orchestrator_task_retry", args=[task.pk]))
    new = Task.objects.get(parent=task)
    assert response.status_code == 302 and response["Location"].endswith(f"{new.pk}/change/")
    event = TaskEvent.objects.filter(task=task).latest("created_at")
    assert (event.actor, event.applied, event.details["new_task"]) == ("operator:olivia", False, str(new.id))
    staff_client.post(reverse("admin:orchestrator_task_cancel", args=[new.pk]))
    new.refresh_from_db()
    assert new.status == "cancelled"
    actions = list(AuditLog.objects.filter(object_type="task").values_list("object_id", "details"))
    assert (str(task.pk), {"action": "retry", "new_task": str(new.id)}) in actions
    assert (str(new.pk), {"action": "cancel", "applied": True}) in actions


def test_event_details_are_readable_fields_and_late_callbacks_are_information(staff_client, ada):
    task, _ = task_create(type="sms.send", payload={"to": ada.phone, "body": "Hi"}, contact_id=ada.pk)
    Task.objects.filter(pk=task.pk).update(status="in_progress")  # the agent sent it
    task_transition(
        task_id=task.id, to="succeeded", actor="webhook:twilio", details={"message_status": "delivered"}
    )
    task_transition(
        task_id=task.id, to="in_progress", actor="webhook:twilio", details={"message_status": "sent"}
    )
    html = staff_client.get(reverse("admin:orchestrator_task_change", args=[task.pk])).content.decode()
    events = html[html.index('id="cc-events"') :]
    assert "<dt>message status</dt><dd>delivered</dd>" in events
    assert "{&#x27;message_status&#x27;" not in events and "{'message_status'" not in events
    assert "late, not applied" in events and "(stale, not applied)" not in events


# --- hang up -------------------------------------------------------------------------------------


def live_call(contact, *, sid: str | None = "CA" + "c" * 32) -> Task:
    task, _ = task_create(type="call.outbound", payload={"to": contact.phone}, contact_id=contact.pk)
    Task.objects.filter(pk=task.pk).update(status="in_progress")  # the voice agent placed the call
    Call.objects.create(contact=contact, task=task, from_address="+14155550000", to_address=contact.phone,
                        status="in-progress", provider_sid=sid, occurred_at=timezone.now())  # fmt: skip
    return task


def test_hang_up_asks_the_simulated_provider_and_the_completed_callback_ends_the_task(
    staff_client, ada, client
):
    task = live_call(ada)
    response = staff_client.post(reverse("dashboard:call", args=[task.pk]), follow=True)
    assert "Hang-up sent to the voice provider" in response.content.decode()
    assert hang_up_requested("CA" + "c" * 32)  # what Twilio's call update is to the simulator
    task.refresh_from_db()
    assert task.status == "in_progress"  # until the provider confirms
    event = TaskEvent.objects.filter(task=task).latest("created_at")
    assert (event.actor, event.details) == ("operator:olivia", {"action": "hang_up", "provider_asked": True})
    assert AuditLog.objects.filter(object_id=str(task.pk), details__action="hang_up").exists()
    # The provider's completed callback (signed, as Twilio sends it) ends the task.
    url = links.status_callback_url(task.id).split("#")[0]
    params = {
        "CallSid": "CA" + "c" * 32,
        "CallStatus": "completed",
        "CallDuration": "42",
        "SequenceNumber": "3",
    }
    client.post(
        url.removeprefix("http://127.0.0.1:8000"), params, HTTP_X_TWILIO_SIGNATURE=twilio_sign(url, params)
    )
    task.refresh_from_db()
    assert task.status == "cancelled" and task.error_code == "operator_hangup"
    assert "hung up by operator:olivia" in task.error_message


@override_settings(TEST_MODE=False, TWILIO_ACCOUNT_SID="AC" + "ab" * 16, TWILIO_AUTH_TOKEN="cd" * 16)
def test_hang_up_in_production_updates_the_twilio_call_to_completed(staff_client, ada, settings):
    task = live_call(ada, sid="CA" + "d" * 32)
    with FakeTwilioCalls("AC" + "ab" * 16, "cd" * 16) as fake:
        settings.TWILIO_API_BASE_URL = fake.base_url
        staff_client.post(reverse("dashboard:call", args=[task.pk]))
    [request] = fake.requests
    assert request.call_sid == "CA" + "d" * 32 and request.form == {"Status": ["completed"]}
    assert request.auth == ("AC" + "ab" * 16, "cd" * 16)
    assert Call.objects.get(task=task).end_reason == "operator_hangup: hung up by operator:olivia"


@override_settings(TEST_MODE=False, TWILIO_ACCOUNT_SID="AC" + "ab" * 16, TWILIO_AUTH_TOKEN="cd" * 16)
def test_a_refused_hang_up_says_why_and_changes_nothing(staff_client, ada, settings):
    task = live_call(ada, sid="CA" + "e" * 32)
    with FakeTwilioCalls("AC" + "ab" * 16, "cd" * 16) as fake:
        settings.TWILIO_API_BASE_URL = fake.base_url
        settings.TWILIO_AUTH_TOKEN = "wrong" * 6  # Twilio answers 401
        page = staff_client.post(reverse("dashboard:call", args=[task.pk]), follow=True).content.decode()
    assert "Cannot hang up: the voice provider did not end the call" in page
    task.refresh_from_db()
    assert task.status == "in_progress"
    assert not AuditLog.objects.filter(object_id=str(task.pk)).exists()


def test_hang_up_before_the_call_is_placed_cancels_the_task(staff_client, ada):
    task = live_call(ada, sid=None)
    staff_client.post(reverse("dashboard:call", args=[task.pk]))
    task.refresh_from_db()
    assert task.status == "cancelled" and "before the call was placed" in task.error_message


def test_call_view_catch_up_returns_the_turns_after_a_sequence(staff_client, ada):
    task = live_call(ada)
    call = Call.objects.get(task=task)
    for n in (1, 2, 3):
        call.turns.create(sequence=n, speaker="caller", text=f"turn {n}", started_at=timezone.now())
    body = json.loads(
        staff_client.get(reverse("dashboard:call", args=[task.pk]), {"format": "json", "after": "1"}).content
    )
    assert body["live"] is True and [t["text"] for t in body["turns"]] == ["turn 2", "turn 3"]


# --- dossier links and first-minutes polish ---------------------------------------------------------


def test_a_call_placed_by_number_joins_that_contacts_dossier_and_every_row_links(api, staff_client, ada):
    response = api.post("/api/calls/", {"to": ada.phone, "goal": "confirm the delivery window"},
                        content_type="application/json")  # fmt: skip
    assert response.status_code == 201, response.content
    task = Task.objects.get(id=response.json()["id"])
    assert task.contact_id == ada.pk and Call.objects.get(task=task).contact_id == ada.pk
    inbound_task = inbound(ada, "Where is my parcel?")
    html = staff_client.get(reverse("admin:dossiers_contact_change", args=[ada.pk])).content.decode()
    dossier = html[html.index('id="cc-dossier"') : html.index("Edit contact")]
    assert reverse("dashboard:call", args=[task.pk]) in dossier
    from conversations.models import ConversationTask

    conversation_id = ConversationTask.objects.get(task=inbound_task).conversation_id
    assert (
        reverse("dashboard:conversation", args=[conversation_id]) in dossier
    )  # the message: its conversation
    assert dossier.count('class="cc-timeline-link"') == 2  # one link per row


def test_a_call_to_a_new_number_creates_its_contact(api):
    response = api.post(
        "/api/calls/", {"to": "+14155550199", "goal": "say hello"}, content_type="application/json"
    )
    assert response.status_code == 201, response.content
    task = Task.objects.select_related("contact").get(id=response.json()["id"])
    assert task.contact.phone == "+14155550199"


def test_a_contact_known_by_number_only_gets_a_neutral_avatar(staff_client):
    from dashboard.presentation import avatar
    from dossiers.models import Contact

    html = str(avatar(Contact.objects.create(phone="+14155550143")))
    assert "cc-avatar-anon" in html and ">1<" not in html
    assert ">AL<" in str(avatar(Contact.objects.create(name="Ada Lovelace", phone="+14155550144")))


def test_view_site_leads_to_the_console_and_there_is_a_favicon(staff_client):
    html = staff_client.get(reverse("admin:index")).content.decode()
    assert 'href="/admin/conversations/"' in html and "dashboard/favicon.svg" in html
    response = staff_client.get("/favicon.ico")
    assert response.status_code == 301 and response["Location"].endswith("dashboard/favicon.svg")


def test_optional_settings_are_not_flagged_red_in_test_mode(staff_client):
    html = staff_client.get(reverse("dashboard:operations")).content.decode()
    row = html[html.index("<code>AWS_STORAGE_BUCKET_NAME</code>") :].split("</tr>")[0]
    assert "not set" in row and 'cc-bad"' not in row and "cc-bad " not in row


def test_a_worker_starting_to_beat_is_pushed_to_the_health_page(olivia):
    from channels.routing import URLRouter
    from django.db import connection

    if connection.vendor != "postgresql":
        # The heartbeat thread writes through its own connection while the test's transaction
        # is open: SQLite locks the whole database for that (the write fails, nothing is pushed).
        unavailable("needs PostgreSQL: the heartbeat thread writes while the test's transaction is open")

    from comms_platform.routing import websocket_urlpatterns
    from orchestrator.heartbeats import HeartbeatThread

    async def run():
        communicator = WebsocketCommunicator(URLRouter(websocket_urlpatterns), "/ws/health/")
        communicator.scope["user"] = olivia
        connected, _ = await communicator.connect(timeout=10)
        assert connected
        beat = HeartbeatThread(["content"])  # what a worker starts on worker_ready
        beat.start()
        try:
            return await communicator.receive_json_from(timeout=10)
        finally:
            beat.stopped.set()
            await communicator.disconnect()

    message = async_to_sync(run)()
    assert message == {"type": "health.update", "agent": "content", "state": "healthy"}


def test_resolving_a_conversation_finishes_its_inbound_task_with_an_event(staff_client, olivia, ada):
    from conversations.models import ConversationTask

    task = inbound(ada, "Thanks, all good")
    Task.objects.filter(pk=task.pk).update(status="in_progress")  # parked by the messaging agent
    conversation_id = ConversationTask.objects.get(task=task).conversation_id
    staff_client.post(reverse("dashboard:conversation", args=[conversation_id]), {"action": "resolve"})
    task.refresh_from_db()
    assert task.status == "succeeded"
    event = TaskEvent.objects.filter(task=task).latest("created_at")
    assert (event.actor, event.details["action"]) == ("operator:olivia", "resolve")
    assert AuditLog.objects.filter(object_id=str(conversation_id), details__action="resolve").exists()


def test_static_files_get_no_log_line_each(client, caplog):
    request_logger = "django_structlog.middlewares.request"  # logs http.request (comms_platform/logs.py)
    with caplog.at_level("INFO", logger=request_logger):
        client.get("/static/dashboard/console.css")
        client.get("/healthz")
    lines = [str(r.msg) for r in caplog.records if r.name == request_logger]
    assert any("/healthz" in line for line in lines)
    assert not any("/static/" in line for line in lines)
