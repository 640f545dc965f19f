"""The ConversationRelay protocol, in process, with Channels' WebsocketCommunicator and the
local fake OpenAI-compatible streaming server behind the real ``openai`` SDK."""

from __future__ import annotations

import asyncio
import json

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from channels.testing.websocket import WebsocketCommunicator
from django.conf import settings

from agents.voice import links, services
from agents.voice.conversation import APOLOGY, TIME_UP, call_group
from comms_platform.asgi import application
from dossiers.models import Call, TranscriptTurn
from orchestrator.models import Task
from tests.support.services import transactional_db
from tests.voice.conftest import make_call_task, twilio_sign
from tests.voice.relay_client import dtmf, interrupt, prompt, setup

pytestmark = transactional_db  # the consumer's DB calls run on their own connection


async def open_relay(task_id, *, signature: str | None = None, path: str | None = None):
    """Open the websocket as Twilio does: the URL from our TwiML (path and signed query)."""
    path = path or f"{links.relay_path(task_id)}?{links.relay_query(task_id)}"
    sig = twilio_sign(links.ws_base_url() + path) if signature is None else signature
    headers = [(b"x-twilio-signature", sig.encode())] if sig else []
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, code = await communicator.connect()
    return communicator, connected, code


async def reply(communicator) -> list[dict]:
    """Messages up to and including the one with ``last: true`` (and an ``end`` after it)."""
    messages = []
    while True:
        message = json.loads(await communicator.receive_from(timeout=5))
        messages.append(message)
        if message["type"] == "end" or (message["type"] == "text" and message["last"]):
            break
    return messages


def tokens(messages: list[dict]) -> str:
    return "".join(m["token"] for m in messages if m["type"] == "text")


def turns(call) -> list[tuple]:
    return list(TranscriptTurn.objects.filter(call=call).order_by("sequence")
                .values_list("speaker", "text", "interrupted"))  # fmt: skip


def test_tokens_stream_as_they_arrive_then_last_true(fake_openai):
    task, call = make_call_task()
    fake_openai.reply(["Hello", " there", "!"])

    async def scenario():
        layer = get_channel_layer()
        watcher = await layer.new_channel()
        await layer.group_add(call_group(task.id), watcher)
        relay, connected, _ = await open_relay(task.id)
        assert connected
        await relay.send_to(text_data=setup(task.id))
        await relay.send_to(text_data=prompt("Who is this?"))
        messages = await reply(relay)
        await relay.disconnect()
        pushed = [await asyncio.wait_for(layer.receive(watcher), 5) for _ in range(3)]
        return messages, pushed

    messages, pushed = async_to_sync(scenario)()
    assert messages == [
        {"type": "text", "token": "Hello", "last": False},
        {"type": "text", "token": " there", "last": False},
        {"type": "text", "token": "!", "last": False},
        {"type": "text", "token": "", "last": True},
    ]
    [request] = fake_openai.requests
    assert request["model"] == "gpt-test" and request["stream"] is True
    assert {t["function"]["name"] for t in request["tools"]} == {"end_call", "transfer_to_human"}
    system, greeting, user = request["messages"]
    assert system["role"] == "system" and "You are Ada from Acme Deliveries." in system["content"]
    assert "confirm tomorrow's delivery window" in system["content"]
    assert greeting == {"role": "assistant", "content": "Hi, this is Ada from Acme."}
    assert user == {"role": "user", "content": "Who is this?"}
    assert turns(call) == [("agent", "Hi, this is Ada from Acme.", False), ("caller", "Who is this?", False),
                           ("agent", "Hello there!", False)]  # fmt: skip
    assert [p["type"] for p in pushed] == ["call.turn"] * 3
    assert [p["turn"]["speaker"] for p in pushed] == ["agent", "caller", "agent"]
    assert pushed[2]["turn"]["text"] == "Hello there!"
    assert pushed[2]["turn"]["sequence"] == 3 and pushed[2]["turn"]["interrupted"] is False


def test_interrupt_cuts_the_agent_turn_at_what_the_caller_heard(fake_openai):
    task, call = make_call_task()
    fake_openai.reply(["One", " two", " three", " four", "."])
    fake_openai.reply(["Okay", "."])

    async def scenario():
        relay, _, _ = await open_relay(task.id)
        await relay.send_to(text_data=setup(task.id))
        await relay.send_to(text_data=prompt("Count for me"))
        await reply(relay)
        await relay.send_to(text_data=interrupt("One two"))
        await relay.send_to(text_data=prompt("Stop counting"))
        second = await reply(relay)
        await relay.disconnect()
        return second

    assert tokens(async_to_sync(scenario)()) == "Okay."
    # The model's next request carries only what was heard.
    assert {"role": "assistant", "content": "One two"} in fake_openai.requests[1]["messages"]
    assert ("agent", "One two", True) in turns(call)
    assert ("agent", "One two three four.", False) not in turns(call)


def test_interrupt_while_streaming_stops_the_answer(fake_openai):
    task, call = make_call_task()
    fake_openai.token_delay = 0.05
    fake_openai.reply([f" w{i}" for i in range(40)])

    async def scenario():
        relay, _, _ = await open_relay(task.id)
        await relay.send_to(text_data=setup(task.id))
        await relay.send_to(text_data=prompt("Talk"))
        first = [json.loads(await relay.receive_from(timeout=5)) for _ in range(2)]
        await relay.send_to(text_data=interrupt(" w0 w1"))
        late = []
        while not await relay.receive_nothing(timeout=0.3):
            late.append(json.loads(await relay.receive_from()))
        await relay.disconnect()
        return first, late

    first, late = async_to_sync(scenario)()
    assert tokens(first) == " w0 w1"
    assert not any(m.get("last") for m in late) and len(late) <= 2  # at most what was in flight
    assert turns(call)[-1] == ("agent", " w0 w1", True)


def test_dtmf_reaches_the_model(fake_openai):
    task, call = make_call_task()
    fake_openai.reply(["You", " pressed", " five", "."])

    async def scenario():
        relay, _, _ = await open_relay(task.id)
        await relay.send_to(text_data=setup(task.id))
        await relay.send_to(text_data=dtmf("5"))
        messages = await reply(relay)
        await relay.disconnect()
        return messages

    assert tokens(async_to_sync(scenario)()) == "You pressed five."
    assert "5" in fake_openai.requests[0]["messages"][-1]["content"]
    assert ("caller", "DTMF 5", False) in turns(call)


def test_end_call_tool_ends_the_session(fake_openai):
    task, call = make_call_task()
    fake_openai.reply(["Thanks", ",", " goodbye", "!"], tool=("end_call", {"reason": "the callee is done"}))

    async def scenario():
        relay, _, _ = await open_relay(task.id)
        await relay.send_to(text_data=setup(task.id))
        await relay.send_to(text_data=prompt("That's all, bye"))
        messages = await reply(relay)
        messages += await reply(relay)
        await relay.disconnect()
        return messages

    messages = async_to_sync(scenario)()
    assert tokens(messages) == "Thanks, goodbye!"
    assert messages[-2] == {"type": "text", "token": "", "last": True}
    assert messages[-1]["type"] == "end"
    assert json.loads(messages[-1]["handoffData"]) == {
        "reasonCode": "end_call",
        "reason": "the callee is done",
    }
    assert Call.objects.get(id=call.id).end_reason == "end_call: the callee is done"


def test_transfer_to_human_queues_a_handoff_task(fake_openai):
    task, call = make_call_task()
    fake_openai.reply(["Let", " me", " get", " someone", "."],
                      tool=("transfer_to_human", {"reason": "wants a person", "summary": "billing question"}))  # fmt: skip

    async def scenario():
        relay, _, _ = await open_relay(task.id)
        await relay.send_to(text_data=setup(task.id))
        await relay.send_to(text_data=prompt("Can I talk to a human?"))
        messages = await reply(relay)
        messages += await reply(relay)
        await relay.disconnect()
        return messages

    end = async_to_sync(scenario)()[-1]
    handoff = json.loads(end["handoffData"])
    assert (end["type"], handoff["reasonCode"], handoff["summary"]) == (
        "end",
        "live-agent-handoff",
        "billing question",
    )
    child = Task.objects.get(id=handoff["handoffTaskId"])
    assert (child.type, child.parent_id, child.status) == ("call.handoff", task.id, "in_progress")
    assert child.payload["reason"] == "wants a person"
    assert Call.objects.get(id=call.id).end_reason.startswith("handoff: ")


@pytest.mark.parametrize("case", ["missing", "garbage", "other_token", "other_task"])
def test_upgrade_without_a_valid_signature_is_refused(case):
    task, _ = make_call_task()
    other, _ = make_call_task()
    path = links.relay_path(task.id)
    signature = {
        "missing": "",
        "garbage": "bm9wZQ==",
        "other_token": __import__("twilio.request_validator")
        .request_validator.RequestValidator("0" * 32)
        .compute_signature(links.ws_base_url() + path, {}),
        "other_task": twilio_sign(links.relay_ws_url(other.id)),
    }[case]

    async def scenario():
        return await open_relay(task.id, signature=signature)

    _, connected, code = async_to_sync(scenario)()
    assert not connected
    assert code in (403, 4403)


def test_llm_failure_apologises_ends_and_fails_the_task(fake_openai):
    task, call = make_call_task()
    fake_openai.fail_status = 500

    async def scenario():
        relay, _, _ = await open_relay(task.id)
        await relay.send_to(text_data=setup(task.id))
        await relay.send_to(text_data=prompt("Hello?"))
        messages = await reply(relay)
        messages += await reply(relay)
        await relay.disconnect()
        return messages

    messages = async_to_sync(scenario)()
    assert messages[0] == {"type": "text", "token": APOLOGY, "last": True}
    assert (
        messages[1]["type"] == "end" and json.loads(messages[1]["handoffData"])["reasonCode"] == "llm_error"
    )
    call.refresh_from_db()
    assert call.end_reason == "llm_error: the language model failed: InternalServerError (HTTP 500)"
    assert turns(call)[-1] == ("agent", APOLOGY, False)
    services.call_status_apply(
        task_id=task.id, update=services.StatusUpdate(call.provider_sid or "CA1", "completed", 4)
    )
    task.refresh_from_db()
    assert (task.status, task.error_code) == ("failed", "llm_error")
    assert "InternalServerError" in task.error_message


def test_llm_timeout_apologises_and_ends(fake_openai, settings):
    settings.OPENAI_TIMEOUT_SECONDS = 0.3
    fake_openai.hang_seconds = 3
    task, call = make_call_task()

    async def scenario():
        relay, _, _ = await open_relay(task.id)
        await relay.send_to(text_data=setup(task.id))
        await relay.send_to(text_data=prompt("Hello?"))
        messages = await reply(relay)
        messages += await reply(relay)
        await relay.disconnect()
        return messages

    messages = async_to_sync(scenario)()
    assert messages[-2] == {"type": "text", "token": APOLOGY, "last": True}
    assert messages[-1]["type"] == "end"
    assert Call.objects.get(id=call.id).end_reason.startswith("llm_error: ")


def test_maximum_duration_is_enforced(fake_openai):
    task, call = make_call_task(max_duration_seconds=0.3)

    async def scenario():
        relay, _, _ = await open_relay(task.id)
        await relay.send_to(text_data=setup(task.id))
        messages = await reply(relay)
        messages += await reply(relay)
        await relay.disconnect()
        return messages

    messages = async_to_sync(scenario)()
    assert messages[0] == {"type": "text", "token": TIME_UP, "last": True}
    assert json.loads(messages[1]["handoffData"]) == {"reasonCode": "max_duration"}
    assert Call.objects.get(id=call.id).end_reason.startswith("max_duration: ")


def test_a_caller_hang_up_is_recorded(fake_openai):
    task, call = make_call_task()

    async def scenario():
        relay, _, _ = await open_relay(task.id)
        await relay.send_to(text_data=setup(task.id))
        await relay.disconnect()

    async_to_sync(scenario)()
    assert Call.objects.get(id=call.id).end_reason.startswith("caller_hangup")
    assert settings.PUBLIC_WS_BASE_URL == ""  # the ws URL was derived from PUBLIC_BASE_URL
