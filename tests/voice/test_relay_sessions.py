"""ConversationRelay sessions are single-use and live-only (agents/voice/relay_sessions.py):
a replayed, expired, tampered or second handshake is refused before the websocket opens,
even with a valid X-Twilio-Signature, and writes nothing to the dossier."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlencode

import pytest
from asgiref.sync import async_to_sync
from django.conf import settings
from django.utils import timezone

from agents.voice import links
from agents.voice.models import RelaySession
from dossiers.models import Call, TranscriptTurn
from orchestrator.models import Task
from tests.support.services import transactional_db
from tests.voice.conftest import make_call_task
from tests.voice.relay_client import prompt, setup
from tests.voice.test_relay_consumer import open_relay, reply

pytestmark = transactional_db


def twiml_path(task_id, **query_overrides) -> str:
    """The path and query of the relay URL our TwiML hands Twilio (optionally altered)."""
    query = {k: v[0] for k, v in parse_qs(links.relay_query(task_id)).items()}
    query.update(query_overrides)
    return f"{links.relay_path(task_id)}?{urlencode(query)}"


def connect(task_id, path: str):
    async def scenario():
        return await open_relay(task_id, path=path)

    communicator, connected, code = async_to_sync(scenario)()
    return communicator, connected, code


def assert_refused(task_id, path: str) -> None:
    _, connected, code = connect(task_id, path)
    assert not connected
    assert code in (403, 4403)


def test_a_fresh_url_opens_one_session(fake_openai):
    task, _ = make_call_task()
    fake_openai.reply(["Hello", "!"])
    path = twiml_path(task.id)

    async def scenario():
        relay, connected, _ = await open_relay(task.id, path=path)
        assert connected
        await relay.send_to(text_data=setup(task.id))
        await relay.send_to(text_data=prompt("Hi"))
        messages = await reply(relay)
        await relay.disconnect()
        return messages

    assert async_to_sync(scenario)()[-1]["last"] is True
    assert RelaySession.objects.get(task=task).nonce == parse_qs(path.split("?", 1)[1])["nonce"][0]


def test_a_replayed_handshake_is_refused_during_and_after_the_call(fake_openai):
    task, call = make_call_task()
    path = twiml_path(task.id)

    async def during_the_call():
        first, connected, _ = await open_relay(task.id, path=path)
        assert connected
        await first.disconnect()
        # The same URL and signature, replayed while the call is live.
        _, replayed, code = await open_relay(task.id, path=path)
        return replayed, code

    assert async_to_sync(during_the_call)() in ((False, 403), (False, 4403))
    turns = TranscriptTurn.objects.filter(call=call).count()

    Task.objects.filter(id=task.id).update(status="succeeded")
    Call.objects.filter(id=call.id).update(status="completed", ended_at=timezone.now())
    assert_refused(task.id, path)  # …and after it finished
    RelaySession.objects.filter(task=task).delete()
    assert_refused(task.id, twiml_path(task.id))  # even a never-used URL: the call is over
    assert TranscriptTurn.objects.filter(call=call).count() == turns


def test_an_expired_url_is_refused():
    task, _ = make_call_task()
    issued = time.time() - settings.VOICE_RELAY_URL_TTL_SECONDS - 1
    expired = f"{links.relay_path(task.id)}?{links.relay_query(task.id, now=issued)}"
    assert_refused(task.id, expired)
    assert not RelaySession.objects.exists()


def test_a_second_session_on_a_live_call_is_refused(fake_openai):
    task, _ = make_call_task()

    async def scenario():
        first, connected, _ = await open_relay(task.id, path=twiml_path(task.id))
        assert connected
        try:  # a second, freshly signed URL while the first session is open
            _, second, code = await open_relay(task.id, path=twiml_path(task.id))
        finally:
            await first.disconnect()
        return second, code

    assert async_to_sync(scenario)() in ((False, 403), (False, 4403))
    assert RelaySession.objects.filter(task=task).count() == 1


@pytest.mark.parametrize("field", ["exp", "nonce", "sig", "missing"])
def test_a_tampered_query_is_refused_even_with_a_valid_twilio_signature(field):
    """Someone holding the Twilio token (it signs the query) still cannot mint a session URL."""
    task, _ = make_call_task()
    if field == "missing":
        path = links.relay_path(task.id)
    else:
        value = {"exp": str(int(time.time()) + 86400), "nonce": "chosen-nonce", "sig": "0" * 64}[field]
        path = twiml_path(task.id, **{field: value})
    assert_refused(task.id, path)


@pytest.mark.parametrize("status", ["queued", "succeeded", "failed", "cancelled"])
def test_no_session_for_a_call_that_is_not_live(status):
    task, call = make_call_task(status="in_progress" if status == "queued" else status)
    if status == "queued":  # the call itself ended (a no-answer), the task not yet moved on
        Call.objects.filter(id=call.id).update(status="no-answer")
    assert_refused(task.id, twiml_path(task.id))
