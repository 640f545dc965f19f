"""TwiML, <Connect> action, <Gather> rounds, status and recording callbacks."""

from __future__ import annotations

import itertools
import time
from urllib.parse import parse_qs, urlsplit
from xml.etree import ElementTree

import pytest
from django.conf import settings

from agents.voice import links
from dossiers.models import Artifact, Call, TranscriptTurn
from orchestrator.models import Task
from tests.support.services import transactional_db
from tests.voice.conftest import make_call_task, twilio_sign

pytestmark = pytest.mark.django_db


def parse_xml(content: bytes) -> ElementTree.Element:
    return ElementTree.fromstring(content)  # noqa: S314 (our own TwiML)


def signed_post(client, url: str, params: dict, *, signature: str | None = None):
    path = url.removeprefix(settings.PUBLIC_BASE_URL).split("#")[0]
    sig = twilio_sign(url.split("#")[0], params) if signature is None else signature
    return client.post(path, params, HTTP_X_TWILIO_SIGNATURE=sig)


def test_twiml_connects_conversation_relay_to_our_websocket(client, call_task):
    task, _ = call_task
    response = signed_post(
        client, links.twiml_url(task.id), {"CallSid": "CA" + "1" * 32, "CallStatus": "in-progress"}
    )

    assert response.status_code == 200
    assert response["Content-Type"] == "application/xml"
    root = parse_xml(response.content)
    assert root.tag == "Response"
    connect = root.find("Connect")
    assert connect.get("action") == links.connect_action_url(task.id)
    relay = connect.find("ConversationRelay")
    url = urlsplit(relay.get("url"))
    assert url._replace(query="").geturl() == f"ws://127.0.0.1:8000/ws/voice/relay/{task.id}/"
    query = parse_qs(url.query)
    assert sorted(query) == [
        "exp",
        "nonce",
        "sig",
    ]  # single-use and expiring (tests/voice/test_relay_sessions.py)
    assert 0 < int(query["exp"][0]) - time.time() <= settings.VOICE_RELAY_URL_TTL_SECONDS
    assert relay.get("welcomeGreeting") == "Hi, this is Ada from Acme."
    assert relay.get("language") == "en-US"
    assert relay.get("voice") == "en-US-Journey-O"
    assert relay.get("dtmfDetection") == "true"
    assert relay.get("interruptible") == "any"
    [parameter] = relay.findall("Parameter")
    assert (parameter.get("name"), parameter.get("value")) == ("task_id", str(task.id))


def test_twiml_uses_the_public_wss_url(client, call_task, settings):
    settings.PUBLIC_BASE_URL = "https://comms.example.com"
    task, _ = call_task
    response = signed_post(client, links.twiml_url(task.id), {"CallStatus": "in-progress"})
    relay = parse_xml(response.content).find("Connect/ConversationRelay")
    assert relay.get("url").startswith(f"wss://comms.example.com/ws/voice/relay/{task.id}/?exp=")


@pytest.mark.parametrize("signature", ["", "bm90IGEgc2lnbmF0dXJl"])
def test_twiml_refuses_a_missing_or_bad_signature(client, call_task, signature):
    task, _ = call_task
    response = signed_post(
        client, links.twiml_url(task.id), {"CallStatus": "in-progress"}, signature=signature
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "invalid_signature"


def test_twiml_signed_with_another_token_is_refused(client, call_task):
    task, _ = call_task
    url = links.twiml_url(task.id)
    from twilio.request_validator import RequestValidator

    forged = RequestValidator("f" * 32).compute_signature(url, {"CallStatus": "in-progress"})
    assert signed_post(client, url, {"CallStatus": "in-progress"}, signature=forged).status_code == 403


@transactional_db  # the agent's async DB calls use their own connection handling
def test_gather_mode_loops_through_the_same_agent(client, settings):
    settings.VOICE_MODE = "gather"
    settings.OPENAI_BASE_URL = ""  # the deterministic generator
    task, call = make_call_task()
    first = parse_xml(signed_post(client, links.twiml_url(task.id), {"CallStatus": "in-progress"}).content)
    gather = first.find("Gather")
    assert gather.get("input") == "speech"
    assert gather.get("action") == links.gather_url(task.id)
    assert gather.find("Say").text == "Hi, this is Ada from Acme."

    second = parse_xml(
        signed_post(client, links.gather_url(task.id), {"SpeechResult": "What is this about?"}).content
    )
    assert "confirm tomorrow's delivery window" in second.find("Gather/Say").text

    last = parse_xml(signed_post(client, links.gather_url(task.id), {"SpeechResult": "Goodbye"}).content)
    assert last.find("Gather") is None and last.find("Hangup") is not None
    assert last.find("Say").text == "Thank you for your time. Goodbye!"
    turns = list(TranscriptTurn.objects.filter(call=call).values_list("sequence", "speaker"))
    assert turns == [(1, "agent"), (2, "caller"), (3, "agent"), (4, "caller"), (5, "agent")]
    assert Call.objects.get(id=call.id).end_reason.startswith("end_call")


def test_connect_action_after_a_handoff_says_a_colleague_will_call(client, call_task):
    task, _ = call_task
    handoff = '{"reasonCode": "live-agent-handoff", "reason": "asked for a person"}'
    root = parse_xml(signed_post(client, links.connect_action_url(task.id), {"HandoffData": handoff}).content)
    assert "colleague" in root.find("Say").text and root.find("Hangup") is not None


# --- status callbacks --------------------------------------------------------------------

SID = "CA" + "5" * 32


def status(client, task, call_status: str, **extra):
    params = {"CallSid": SID, "AccountSid": settings.TWILIO_ACCOUNT_SID, "CallStatus": call_status,
              "From": "+15005550006", "To": "+14155550123", "Direction": "outbound-api", **extra}  # fmt: skip
    return signed_post(client, links.status_callback_url(task.id), params)


HAPPY = [("initiated", {}), ("ringing", {}), ("in-progress", {}), ("completed", {"CallDuration": "42"})]


def test_status_callbacks_move_call_and_task_to_succeeded(client, call_task):
    task, call = call_task
    for name, extra in HAPPY:
        assert status(client, task, name, **extra).status_code == 200
    call.refresh_from_db()
    task.refresh_from_db()
    assert (call.status, call.duration_seconds, call.provider_sid) == ("completed", 42, SID)
    assert task.status == "succeeded"
    assert task.result["duration_seconds"] == 42


@pytest.mark.parametrize("order", list(itertools.permutations(range(4)))[::3])
def test_status_callbacks_out_of_order_and_duplicated_end_the_same(client, order):
    task, call = make_call_task()
    sequence = [HAPPY[i] for i in order]
    for name, extra in sequence + sequence[:2]:  # and a couple of duplicates
        assert status(client, task, name, **extra).status_code == 200
    call.refresh_from_db()
    task.refresh_from_db()
    assert (call.status, call.duration_seconds) == ("completed", 42)
    assert task.status == "succeeded"
    assert task.events.filter(to_status="succeeded", applied=True).count() == 1


@pytest.mark.parametrize(("final", "code"), [("busy", "busy"), ("no-answer", "no_answer"), ("failed", "call_failed"),
                                              ("canceled", "canceled")])  # fmt: skip
def test_unsuccessful_calls_fail_the_task_with_the_reason(client, call_task, final, code):
    task, call = call_task
    status(client, task, "initiated")
    status(client, task, final)
    status(client, task, "ringing")  # late: changes nothing
    status(client, task, "completed", CallDuration="3")  # another final status: too late
    task.refresh_from_db()
    call.refresh_from_db()
    assert (task.status, task.error_code) == ("failed", code)
    assert call.status == final


def test_an_llm_failure_fails_the_completed_call(client, call_task):
    task, call = call_task
    Call.objects.filter(id=call.id).update(end_reason="llm_error: the language model failed: APITimeoutError")
    status(client, task, "completed", CallDuration="9")
    task.refresh_from_db()
    assert (task.status, task.error_code) == ("failed", "llm_error")
    assert "APITimeoutError" in task.error_message


def test_status_callback_with_a_bad_signature_changes_nothing(client, call_task):
    task, call = call_task
    url = links.status_callback_url(task.id)
    response = signed_post(client, url, {"CallSid": SID, "CallStatus": "completed"}, signature="AAAA")
    assert response.status_code == 403
    call.refresh_from_db()
    assert call.status == "queued"


def test_unknown_call_status_is_a_400(client, call_task):
    task, _ = call_task
    assert status(client, task, "exploded").status_code == 400


def test_recording_callback_stores_an_artifact_reference_once(client, call_task):
    task, call = call_task
    params = {"CallSid": SID, "RecordingSid": "RE" + "7" * 32, "RecordingStatus": "completed",
              "RecordingUrl": "https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE7", "RecordingDuration": "12"}  # fmt: skip
    for _ in range(2):
        assert signed_post(client, links.recording_callback_url(task.id), params).status_code == 200
    call.refresh_from_db()
    [artifact] = Artifact.objects.filter(task=task)
    assert call.recording_id == artifact.id
    assert (artifact.kind, artifact.source_url) == ("recording", params["RecordingUrl"])
    assert Task.objects.get(id=task.id).status == "in_progress"  # a recording does not end the task


@pytest.mark.django_db
def test_a_call_whose_final_callback_was_lost_is_finished_by_the_status_check():
    """The sweeper's status check asks the (simulated) provider and applies its answer."""
    from agents.voice.services import call_status_check

    task, call = make_call_task()
    Task.objects.filter(id=task.id).update(provider_id="CA" + "1" * 32)
    assert call_status_check(task_id=task.id) == "applied:completed"
    task.refresh_from_db()
    call.refresh_from_db()
    assert (task.status, call.status) == ("succeeded", "completed")
    assert task.events.filter(to_status="succeeded").exists()


@pytest.mark.django_db
def test_a_call_the_provider_does_not_know_fails_with_a_clear_code():
    from agents.voice.services import call_status_check

    task, _ = make_call_task()
    Task.objects.filter(id=task.id).update(provider_id="XX-unknown")
    assert call_status_check(task_id=task.id) == "failed:not_found_at_provider"
    task.refresh_from_db()
    assert (task.status, task.error_code) == ("failed", "not_found_at_provider")


@pytest.mark.django_db
def test_recordings_never_fetched_are_picked_up_by_the_periodic_job(settings):
    from datetime import timedelta

    from django.utils import timezone

    from agents.voice.services import recording_reference_store, recordings_pending_fetch
    from tests.fakes.twilio_calls import FakeTwilioCalls

    account, token = "AC" + "2" * 32, "2" * 32
    settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN = account, token
    task, _ = make_call_task()
    recording_sid = "RE" + "3" * 32
    with FakeTwilioCalls(account, token) as fake:
        fake.recordings[recording_sid] = b"RIFF fake wav"
        url = f"https://api.twilio.com/2010-04-01/Accounts/{account}/Recordings/{recording_sid}"
        settings.TWILIO_API_BASE_URL = ""  # the reference is stored without queueing a download
        recording_reference_store(task_id=task.id, recording_url=url)
        artifact = Artifact.objects.get(kind="recording")
        assert artifact.sha256 == ""
        Artifact.objects.filter(id=artifact.id).update(occurred_at=timezone.now() - timedelta(minutes=5))
        settings.TWILIO_API_BASE_URL = fake.base_url
        assert recordings_pending_fetch(min_age_seconds=30) == 1
        artifact.refresh_from_db()
        assert artifact.size == len(b"RIFF fake wav") and artifact.sha256
        assert recordings_pending_fetch(min_age_seconds=30) == 0
