"""Voice hand-off: the AI agent hands the caller to a person. Twilio's signed requests drive it:
the <Connect> action after ConversationRelay ended with ``live-agent-handoff``, then the
<Dial> action. An available operator's phone is dialled (summary and transcript shown in the
console); with nobody available, or no answer, the caller hears the callback message and a
callback conversation waits. The ``call.handoff`` task is final either way."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit
from xml.etree import ElementTree

import pytest
from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from agents.voice import links
from agents.voice import services as voice
from conversations import services
from conversations.models import Conversation
from dossiers.models import Call, Contact
from orchestrator.models import Task
from tests.voice.conftest import make_call_task, twilio_sign

pytestmark = pytest.mark.django_db
OPERATOR_PHONE = "+14155550999"


def twiml(response) -> ElementTree.Element:
    return ElementTree.fromstring(response.content)  # noqa: S314 (our own TwiML)


def signed_post(client, url: str, params: dict):
    return client.post(url.removeprefix(settings.PUBLIC_BASE_URL), params,
                       HTTP_X_TWILIO_SIGNATURE=twilio_sign(url, params))  # fmt: skip


@pytest.fixture
def handed_off(django_capture_on_commit_callbacks):
    """A live call whose caller said "I want to speak to a person": the agent's transcript and
    its ``transfer_to_human`` tool call made the ``call.handoff`` task (parked, in progress)."""
    ada = Contact.objects.create(name="Ada Lovelace", phone="+14155550123")
    task, call = make_call_task()
    Task.objects.filter(pk=task.pk).update(contact=ada)
    Call.objects.filter(pk=call.pk).update(contact=ada)  # as a real call to Ada's number has it
    for n, (speaker, text) in enumerate([("agent", "Hi, this is Ada from Acme."),
                                         ("caller", "I want to speak to a person")], start=1):  # fmt: skip
        voice.transcript_turn_save(
            call_id=call.id, sequence=n, speaker=speaker, text=text, started_at=timezone.now()
        )
    with django_capture_on_commit_callbacks(execute=True):
        handoff = voice.handoff_task_create(parent_task_id=task.id, reason="asked for a person",
                                            summary="Wants to move tomorrow's delivery to Friday.")  # fmt: skip
    handoff.refresh_from_db()
    assert handoff.status == "in_progress"
    data = json.dumps({"reasonCode": "live-agent-handoff", "reason": "asked for a person",
                       "summary": "Wants to move tomorrow's delivery to Friday.", "handoffTaskId": str(handoff.id)})  # fmt: skip
    return task, handoff, data


def test_the_caller_ends_at_an_available_operator_with_the_summary_in_the_console(
    client, operators, handed_off
):
    task, handoff, data = handed_off
    olivia = operators[0]
    operator = services.operator_set_availability(user=olivia, available=True)
    operator.phone = OPERATOR_PHONE
    operator.save()

    response = signed_post(client, links.connect_action_url(task.id), {"HandoffData": data})

    root = twiml(response)
    dial = root.find("Dial")
    assert dial is not None and dial.text == OPERATOR_PHONE  # the transfer asked of Twilio
    assert dial.get("timeout") == str(settings.VOICE_HANDOFF_DIAL_SECONDS)
    assert parse_qs(urlsplit(dial.get("action")).query) == {"handoff": [str(handoff.id)]}
    conv = Conversation.objects.get(channel="voice")
    assert conv.assignee == olivia

    client.force_login(olivia)
    page = client.get(reverse("dashboard:conversation", args=[conv.pk])).content.decode()
    panel = page.split('id="cc-handoff"')[1].split("</section>")[0]
    assert (
        "Wants to move tomorrow&#x27;s delivery to Friday." in panel
        and "I want to speak to a person" in panel
    )
    thread = page.split('id="cc-thread"')[1]
    assert 'data-kind="call"' in thread  # the call itself is in the conversation's thread

    signed_post(client, dial.get("action"), {"CallSid": "CA" + "1" * 32, "DialCallStatus": "completed"})

    handoff.refresh_from_db()
    assert (handoff.status, handoff.result) == ("succeeded", {"outcome": "connected"})


def test_with_nobody_available_the_caller_hears_the_message_and_a_callback_waits(
    client, operators, handed_off
):
    task, handoff, data = handed_off
    services.operator_set_availability(user=operators[0], available=False)  # away

    root = twiml(signed_post(client, links.connect_action_url(task.id), {"HandoffData": data}))

    assert (
        root.find("Dial") is None
        and "call you back" in root.find("Say").text
        and root.find("Hangup") is not None
    )
    conv = Conversation.objects.get(channel="voice")
    assert conv.assignee is None and conv.status == "open"
    assert list(conv.labels.values_list("name", flat=True)) == ["callback"]
    handoff.refresh_from_db()
    assert (handoff.status, handoff.result) == ("succeeded", {"outcome": "callback"})


def test_an_unanswered_dial_becomes_a_callback(client, operators, handed_off):
    task, handoff, data = handed_off
    operator = services.operator_set_availability(user=operators[0], available=True)
    operator.phone = OPERATOR_PHONE
    operator.save()
    dial = twiml(signed_post(client, links.connect_action_url(task.id), {"HandoffData": data})).find("Dial")

    root = twiml(
        signed_post(client, dial.get("action"), {"CallSid": "CA" + "1" * 32, "DialCallStatus": "no-answer"})
    )

    assert "call you back" in root.find("Say").text
    conv = Conversation.objects.get(channel="voice")
    assert conv.assignee is None and conv.labels.filter(name="callback").exists()
    assert conv.events.filter(kind="handoff_unanswered", details__dial_status="no-answer").exists()
    handoff.refresh_from_db()
    assert (handoff.status, handoff.result) == ("succeeded", {"outcome": "callback"})


def test_a_dial_action_naming_no_handoff_task_is_answered_not_a_500(client, operators, handed_off):
    task, handoff, _ = handed_off
    url = links.handoff_dial_url(task.id, "not-a-uuid")
    response = signed_post(client, url, {"CallSid": "CA" + "1" * 32, "DialCallStatus": "no-answer"})
    assert response.status_code == 200 and "call you back" in twiml(response).find("Say").text
    handoff.refresh_from_db()
    assert handoff.status == "in_progress"  # an unknown id finishes nothing
