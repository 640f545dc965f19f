"""The ConversationRelay endpoint over a real socket: uvicorn serving the ASGI app in its
own process, a real websocket client, and the fake OpenAI-compatible streaming server.
The last test runs a whole test-mode call: POST /api/calls/ → simulated callee → succeeded."""

from __future__ import annotations

import json
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from django.conf import settings
from twilio.request_validator import RequestValidator
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from agents.voice import links
from agents.voice.conversation import APOLOGY
from dashboard.live_auth import ticket_mint
from dossiers.models import Call, TranscriptTurn
from orchestrator.api.auth import api_key_create
from orchestrator.models import Task
from tests.fakes.openai_stream import FakeOpenAIStream
from tests.support.services import (
    BIN,
    ROOT,
    database_url_for_subprocess,
    free_port,
    platform_env,
    stop_process,
    transactional_db,
    wait_for_port,
    wait_until,
)
from tests.voice.conftest import make_call_task
from tests.voice.relay_client import dtmf, interrupt, prompt, setup

pytestmark = [pytest.mark.services, transactional_db]


@contextmanager
def asgi_server(**env_overrides: str):
    """uvicorn serving comms_platform.asgi:application (HTTP and websockets) in test mode."""
    port = free_port()
    env = platform_env(PUBLIC_BASE_URL=f"http://127.0.0.1:{port}", TWILIO_AUTH_TOKEN=settings.TWILIO_AUTH_TOKEN,
                       SECRET_KEY=settings.SECRET_KEY,
                       TWILIO_ACCOUNT_SID=settings.TWILIO_ACCOUNT_SID, **env_overrides)  # fmt: skip
    log_path = Path(tempfile.mkdtemp(prefix="uvicorn-")) / "server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [str(BIN / "uvicorn"), "comms_platform.asgi:application", "--host", "127.0.0.1", "--port", str(port),
             "--no-access-log"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait_for_port(port, proc=proc)
            yield f"http://127.0.0.1:{port}"
        finally:
            stop_process(proc)


@pytest.fixture(scope="module")
def fake_llm():
    with FakeOpenAIStream() as fake:
        yield fake


@pytest.fixture(scope="module")
def relay_server(fake_llm, django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        database_url_for_subprocess()  # skips (or fails under REQUIRE_SERVICES) without PostgreSQL
    with django_db_blocker.unblock(), asgi_server(OPENAI_BASE_URL=fake_llm.base_url, OPENAI_API_KEY="sk-test",
                                                  OPENAI_MODEL="gpt-test", OPENAI_TIMEOUT_SECONDS="5") as base:  # fmt: skip
        yield base


@pytest.fixture(autouse=True)
def _fresh_fake(fake_llm):
    fake_llm.requests.clear()
    fake_llm.replies.clear()
    fake_llm.fail_status = None


def relay_url(base: str, task_id) -> str:
    """The URL our TwiML would hand Twilio (signed expiry and nonce; the server shares SECRET_KEY)."""
    return base.replace("http", "ws", 1) + f"/ws/voice/relay/{task_id}/?{links.relay_query(task_id)}"


def open_relay(base: str, task_id):
    url = relay_url(base, task_id)
    signature = RequestValidator(settings.TWILIO_AUTH_TOKEN).compute_signature(url, {})
    return connect(url, additional_headers={"X-Twilio-Signature": signature}, open_timeout=5)


def reply(ws) -> list[dict]:
    messages = []
    while True:
        message = json.loads(ws.recv(timeout=10))
        messages.append(message)
        if message["type"] == "end" or (message["type"] == "text" and message["last"]):
            return messages


def text(messages) -> str:
    return "".join(m["token"] for m in messages if m["type"] == "text")


def test_protocol_over_a_real_socket(relay_server, fake_llm):
    task, call = make_call_task()
    fake_llm.reply(["One", " two", " three", "."])
    fake_llm.reply(["You", " pressed", " 7", "."])
    fake_llm.reply(["Bye", "!"], tool=("end_call", {"reason": "finished"}))
    with open_relay(relay_server, task.id) as ws:
        ws.send(setup(task.id))
        ws.send(prompt("Count to three"))
        first = reply(ws)
        ws.send(interrupt("One two"))
        ws.send(dtmf("7"))
        second = reply(ws)
        ws.send(prompt("Thanks, bye"))
        third = reply(ws) + reply(ws)

    assert [m["last"] for m in first] == [False, False, False, False, True]
    assert text(first) == "One two three."
    assert text(second) == "You pressed 7."
    assert third[-1]["type"] == "end"
    assert json.loads(third[-1]["handoffData"])["reasonCode"] == "end_call"
    # What the caller heard, not what was generated, went back to the model.
    assert {"role": "assistant", "content": "One two"} in fake_llm.requests[1]["messages"]
    assert "7" in fake_llm.requests[1]["messages"][-1]["content"]
    wait_until(lambda: Call.objects.get(id=call.id).end_reason, message="the end reason")
    rows = list(
        TranscriptTurn.objects.filter(call=call)
        .order_by("sequence")
        .values_list("speaker", "text", "interrupted")
    )
    assert rows == [
        ("agent", "Hi, this is Ada from Acme.", False),
        ("caller", "Count to three", False),
        ("agent", "One two", True),
        ("caller", "DTMF 7", False),
        ("agent", "You pressed 7.", False),
        ("caller", "Thanks, bye", False),
        ("agent", "Bye!", False),
    ]
    assert Call.objects.get(id=call.id).end_reason == "end_call: finished"


def test_upgrade_without_signature_is_refused(relay_server):
    task, _ = make_call_task()
    with pytest.raises(InvalidStatus) as refused:
        connect(relay_url(relay_server, task.id), open_timeout=5)
    assert refused.value.response.status_code == 403
    with pytest.raises(InvalidStatus):
        connect(
            relay_url(relay_server, task.id),
            additional_headers={"X-Twilio-Signature": "Zm9v"},
            open_timeout=5,
        )


def test_a_replayed_handshake_is_refused_over_a_real_socket(relay_server, fake_llm):
    """The attack of issue 16: the same signed upgrade sent again (during or after the call)."""
    task, call = make_call_task()
    url = relay_url(relay_server, task.id)
    signature = RequestValidator(settings.TWILIO_AUTH_TOKEN).compute_signature(url, {})
    with connect(url, additional_headers={"X-Twilio-Signature": signature}, open_timeout=5):
        pass
    with pytest.raises(InvalidStatus) as refused:
        connect(url, additional_headers={"X-Twilio-Signature": signature}, open_timeout=5)
    assert refused.value.response.status_code == 403
    assert not TranscriptTurn.objects.filter(call=call, speaker="caller").exists()


def test_llm_failure_over_a_real_socket(relay_server, fake_llm):
    task, call = make_call_task()
    fake_llm.fail_status = 503
    with open_relay(relay_server, task.id) as ws:
        ws.send(setup(task.id))
        ws.send(prompt("Hello?"))
        messages = reply(ws) + reply(ws)
    assert messages[0] == {"type": "text", "token": APOLOGY, "last": True}
    assert messages[1]["type"] == "end"
    wait_until(lambda: Call.objects.get(id=call.id).end_reason, message="the end reason")
    assert Call.objects.get(id=call.id).end_reason.startswith("llm_error: the language model failed: ")


def test_a_test_mode_call_runs_end_to_end_with_live_updates(django_user_model, client):
    """POST /api/calls/ in test mode: the simulated callee talks to our websocket, the
    deterministic generator answers, signed callbacks finish the task; the live call view
    shows the turns and the final status."""
    _, key = api_key_create(name="e2e")
    staff = django_user_model.objects.create_user("operator", password="x", is_staff=True, is_superuser=True)
    with asgi_server() as base:  # no OPENAI_BASE_URL: the deterministic generator
        response = requests.post(f"{base}/api/calls/", headers={"Authorization": f"Api-Key {key}"}, timeout=10,
                                 json={"to": "+14155550123", "goal": "confirming the delivery window",
                                       "greeting": "Hi, this is Acme.", "record": True})  # fmt: skip
        assert response.status_code == 201, response.text
        task_id = response.json()["id"]
        live = []
        path = f"/ws/calls/{task_id}/"  # opened as the console page does: with a ticket
        ticket = ticket_mint(user=staff, path=path, origin=base)
        with connect(base.replace("http", "ws", 1) + f"{path}?ticket={ticket}", open_timeout=5,
                     additional_headers={"Origin": base}) as ws:  # fmt: skip
            while not (live and live[-1]["type"] == "call.status" and live[-1]["status"] == "completed"):
                live.append(json.loads(ws.recv(timeout=20)))
        wait_until(lambda: Task.objects.get(id=task_id).status != "in_progress", message="the final state")
        # Like Twilio's, the simulated recording callback comes after the call's final status.
        wait_until(lambda: Call.objects.get(task_id=task_id).recording_id, message="the recording callback")
        task = Task.objects.get(id=task_id)
    assert task.status == "succeeded", (task.error_code, task.error_message)
    call = Call.objects.get(task=task)
    assert (call.status, call.provider_sid, call.end_reason) == (
        "completed",
        task.provider_id,
        "end_call: the callee said goodbye",
    )
    assert call.recording is not None and call.recording.kind == "recording"
    rows = list(
        TranscriptTurn.objects.filter(call=call).order_by("sequence").values_list("speaker", "interrupted")
    )
    assert rows[0] == ("agent", False) and len(rows) == 9
    assert ("agent", True) in rows  # the scripted interrupt
    turns = [m["turn"] for m in live if m["type"] == "call.turn"]
    assert len(turns) >= 5 and turns[-1]["text"] == "Thank you for your time. Goodbye!"
    assert [m["status"] for m in live if m["type"] == "call.status"][-2:] == ["in-progress", "completed"]


def test_a_test_mode_call_in_gather_mode(django_user_model):
    """VOICE_MODE=gather: the simulated callee answers <Gather> rounds; same agent, same end."""
    _, key = api_key_create(name="e2e-gather")
    with asgi_server(VOICE_MODE="gather") as base:
        response = requests.post(f"{base}/api/calls/", headers={"Authorization": f"Api-Key {key}"}, timeout=10,
                                 json={"to": "+14155550123", "goal": "a gather test", "greeting": "Hello."})  # fmt: skip
        assert response.status_code == 201, response.text
        task_id = response.json()["id"]
        wait_until(
            lambda: Task.objects.get(id=task_id).status == "succeeded", timeout=20, message="succeeded"
        )
    call = Call.objects.get(task_id=task_id)
    speakers = list(
        TranscriptTurn.objects.filter(call=call).order_by("sequence").values_list("speaker", flat=True)
    )
    assert speakers == ["agent", "caller", "agent", "caller", "agent", "caller", "agent", "caller", "agent"]
    assert call.end_reason.startswith("end_call")
