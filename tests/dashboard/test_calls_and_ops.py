"""Live calls pages, websockets (staff only), operations and health pages, check_connectivity."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import StringIO
from urllib.parse import parse_qs

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from comms_platform.asgi import application
from comms_platform.routing import websocket_urlpatterns
from dashboard import connectivity
from dossiers.models import Call, TranscriptTurn
from dossiers.services import artifact_store
from orchestrator.models import AgentRegistration, Task
from orchestrator.services import task_create, task_transition

# The consumers run in process, on the in-memory layer (tests/conftest.py says why).
pytestmark = pytest.mark.usefixtures("console_types", "in_memory_channel_layer")


def start_call(contact) -> tuple[Task, Call]:
    task, _ = task_create(type="call.outbound", payload={"to": contact.phone}, contact_id=contact.pk)
    Task.objects.filter(pk=task.pk).update(status="in_progress")  # the voice agent placed the call
    call = Call.objects.create(contact=contact, task=task, from_address="+14155550000", to_address=contact.phone,
                               status="in-progress", provider_sid="CA" + "c" * 32, occurred_at=timezone.now())  # fmt: skip
    return task, call


def test_active_calls_page_lists_calls_in_progress(staff_client, ada):
    task, _ = start_call(ada)
    html = staff_client.get(reverse("dashboard:calls")).content.decode()
    active = html[html.index('id="cc-active-calls"') :]
    assert reverse("dashboard:call", args=[task.pk]) in active and "in-progress" in active


def test_finished_call_shows_transcript_and_recording(staff_client, ada):
    task, call = start_call(ada)
    for n, (who, text) in enumerate([("agent", "Hello Ada"), ("caller", "Hi there")], start=1):
        TranscriptTurn.objects.create(
            call=call, sequence=n, speaker=who, text=text, started_at=timezone.now()
        )
    call.recording = artifact_store(
        content=b"ID3audio", content_type="audio/mpeg", kind="recording", task_id=task.pk
    )
    call.save()
    task_transition(task_id=task.pk, to="succeeded", actor="webhook")

    html = staff_client.get(reverse("dashboard:call", args=[task.pk])).content.decode()

    assert html.index("Hello Ada") < html.index("Hi there")
    assert 'id="cc-recording"' in html and 'id="cc-hangup"' not in html and "new WebSocket" not in html


def connect(path: str, user) -> tuple[bool, int | None, WebsocketCommunicator]:
    communicator = WebsocketCommunicator(URLRouter(websocket_urlpatterns), path)
    communicator.scope["user"] = user
    connected, code = async_to_sync(communicator.connect)()
    return connected, code, communicator


@pytest.mark.parametrize("path", ["/ws/inbox/", "/ws/calls/6a1c39f0-8f2e-4a43-9a57-000000000001/"])
def test_websockets_refuse_anonymous_and_non_staff(path, vera):
    for user in (AnonymousUser(), vera):
        connected, code, _ = connect(path, user)
        assert not connected and code == 4403


def test_websocket_refuses_a_request_without_a_session_through_the_asgi_app():
    communicator = WebsocketCommunicator(
        application, "/ws/inbox/", headers=[(b"origin", b"http://127.0.0.1")]
    )
    connected, code = async_to_sync(communicator.connect)()
    assert not connected and code == 4403


def test_call_websocket_forwards_turns_and_status_to_staff(olivia):
    task_id = "6a1c39f0-8f2e-4a43-9a57-000000000002"
    layer = get_channel_layer()
    turn = {"sequence": 3, "speaker": "agent", "text": "One moment", "started_at": "x", "interrupted": True}

    async def exchange():  # one event loop for the consumer and the layer
        communicator = WebsocketCommunicator(URLRouter(websocket_urlpatterns), f"/ws/calls/{task_id}/")
        communicator.scope["user"] = olivia
        connected, _ = await communicator.connect()
        assert connected
        await layer.group_send(f"call.{task_id}", {"type": "call.turn", "turn": turn})
        first = await communicator.receive_json_from(timeout=5)
        await layer.group_send(f"call.{task_id}", {"type": "call.status", "status": "completed"})
        second = await communicator.receive_json_from(timeout=5)
        await communicator.disconnect()
        return first, second

    first, second = async_to_sync(exchange)()
    assert first == {"type": "call.turn", "turn": turn}
    assert second == {"type": "call.status", "status": "completed"}


def test_operations_page_masks_secrets_and_checks_connectivity(staff_client, monkeypatch):
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "s3cr3t-token-value-1234")
    page = staff_client.get(reverse("dashboard:operations")).content.decode()
    assert "TWILIO_AUTH_TOKEN" in page and "s3cr3t-token-value-1234" not in page

    checked = staff_client.post(reverse("dashboard:operations")).content.decode()
    results = checked[checked.index('id="cc-results"') :]
    assert "database" in results and results.count(">simulated<") == 3


def test_health_page_shows_heartbeat_age_and_failure_rate(staff_client):
    AgentRegistration.objects.filter(task_type="sms.send").update(last_heartbeat_at=timezone.now())
    for status in ("failed", "succeeded", "succeeded", "succeeded"):
        Task.objects.create(type="sms.send", channel="sms", status=status, finished_at=timezone.now())
    html = staff_client.get(reverse("dashboard:health")).content.decode()
    row = html[html.index("<td>sms.send</td>") :].split("</tr>")[0]
    assert "s ago" in row and "25% (1/4)" in row and "healthy" in row


def test_check_connectivity_command_in_test_mode(db):
    out = StringIO()
    call_command("check_connectivity", stdout=out)
    text = out.getvalue()
    assert "database" in text and "twilio" in text and text.count("simulated") == 3


class FakeTwilio(BaseHTTPRequestHandler):
    """Answers as Twilio does for TEST credentials: 403 on the account, 201 on Messages."""

    requests: list[tuple[str, str, dict]] = []

    def log_message(self, *args) -> None:
        pass

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.requests.append(("GET", self.path, {}))
        self._reply(403, {"code": 20008, "message": "Resource not accessible with Test Account Credentials",
                          "more_info": "https://www.twilio.com/docs/errors/20008", "status": 403})  # fmt: skip

    def do_POST(self) -> None:
        form = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
        self.requests.append(("POST", self.path, form))
        sid = "AC" + "0" * 32
        self._reply(201, {"sid": "SM" + "d" * 32, "account_sid": sid, "status": "queued", "from": form["From"][0],
                          "to": form["To"][0], "body": form["Body"][0]})  # fmt: skip


def test_twilio_test_credentials_are_reported_as_sandbox_using_magic_numbers(settings):
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeTwilio)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    FakeTwilio.requests = []
    settings.TEST_MODE = False
    settings.TWILIO_ACCOUNT_SID = "AC" + "0" * 32
    settings.TWILIO_AUTH_TOKEN = "test-token"
    settings.TWILIO_API_BASE_URL = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        result = connectivity.check_twilio()
    finally:
        server.shutdown()
    assert result.status == "sandbox" and "test credentials" in result.detail
    method, path, form = FakeTwilio.requests[-1]
    assert (method, path) == ("POST", f"/2010-04-01/Accounts/{'AC' + '0' * 32}/Messages.json")
    assert form["From"] == ["+15005550006"] and form["To"] == [connectivity.MAGIC_TO]


def test_whatsapp_sandbox_sender_is_recognised_with_join_instructions(settings):
    settings.TWILIO_WHATSAPP_FROM = "whatsapp:+14155238886"
    result = connectivity.check_whatsapp_sender()
    assert result.status == "sandbox" and "join" in result.detail
    settings.TWILIO_WHATSAPP_FROM = "whatsapp:+14155550100"
    assert connectivity.check_whatsapp_sender().status == "ok"
