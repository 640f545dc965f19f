"""Voice hand-off: the AI agent hands the caller to a person. Twilio's signed requests drive it:
the <Connect> action after ConversationRelay ended with ``live-agent-handoff``, then the
<Dial> action. An available operator's phone is dialled (summary and transcript shown in the
console); with nobody available, or no answer, the caller hears the callback message and a
callback conversation waits. The ``call.handoff`` task is final either way."""

from __future__ import annotations

import json
import threading
from urllib.parse import parse_qs, urlsplit
from xml.etree import ElementTree

import pytest
from django.conf import settings
from django.db import connection, connections
from django.urls import reverse
from django.utils import timezone

from agents.voice import links
from agents.voice import services as voice
from conversations import handoff, services
from conversations.models import Conversation
from dossiers.models import Call, Contact
from orchestrator.models import Task
from tests.support.services import transactional_db, unavailable
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


def _handoff_for(number: str) -> Task:
    """A live call to ``number`` whose agent made the hand-off task (no dispatch: written directly)."""
    contact = Contact.objects.create(name=f"Caller {number[-4:]}", phone=number)
    task, _call = make_call_task()
    Task.objects.filter(pk=task.pk).update(contact=contact)
    return Task.objects.create(type="call.handoff", channel="voice", status="in_progress", contact=contact,
                               payload={"reason": "asked for a person", "summary": "", "call_task": str(task.id)},
                               parent=task, correlation_id="corr-1")  # fmt: skip


@transactional_db
def test_two_handoffs_at_once_never_ring_one_operator_past_capacity(operators):
    """One operator of capacity 1, two callers asking for a person at the same moment: the pick
    is auto-assignment's (same filter, same row lock), so only one hand-off rings her."""
    if connection.vendor != "postgresql":
        unavailable("needs PostgreSQL for concurrent hand-offs from several connections")
    operator = services.operator_set_availability(user=operators[0], available=True, capacity=1)
    operator.phone = OPERATOR_PHONE
    operator.save()
    tasks = [_handoff_for(number) for number in ("+14155550171", "+14155550172")]
    barrier = threading.Barrier(len(tasks))
    routes: dict[str, object] = {}

    def route(task_id) -> None:
        try:
            barrier.wait(5)
            routes[str(task_id)] = handoff.handoff_route(handoff_task_id=task_id)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=route, args=(t.pk,)) for t in tasks]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)

    assert len(routes) == 2
    rung = [r for r in routes.values() if r is not None]
    assert rung == [{"transfer": "phone", "phone": OPERATOR_PHONE, "operator": "olivia"}]
    assert Conversation.objects.filter(assignee=operators[0], status="open").count() == 1


def test_an_operator_who_may_not_work_conversations_is_never_rung(django_user_model, handed_off, client):
    """The same filter as auto-assignment: staff without the operator role get no hand-off."""
    task, _handoff_task, data = handed_off
    outsider = django_user_model.objects.create_user("guest", "g@example.com", "pw", is_staff=True)
    operator = services.operator_set_availability(user=outsider, available=True)
    operator.phone = OPERATOR_PHONE
    operator.save()

    root = twiml(signed_post(client, links.connect_action_url(task.id), {"HandoffData": data}))

    assert root.find("Dial") is None and "call you back" in root.find("Say").text


def test_console_queue_through_signed_webhooks(client, operators, handed_off, settings):
    """An operator without a phone: the caller is put in the hand-off's queue (<Enqueue>), the
    wait URL holds them, Take call asks the provider to dequeue them to the operator's client
    leg (<Dial><Client>), whose answer finishes the hand-off as connected."""
    task, handoff_task, data = handed_off
    oscar = operators[1]
    services.operator_set_availability(user=oscar, available=True)
    call_sid = "CA" + "5" * 32

    root = twiml(
        signed_post(client, links.connect_action_url(task.id), {"HandoffData": data, "CallSid": call_sid})
    )

    enqueue = root.find("Enqueue")
    assert enqueue.text == f"handoff-{handoff_task.id}"
    conv = Conversation.objects.get(channel="voice")
    assert conv.assignee == oscar
    client.force_login(oscar)
    page = client.get(reverse("dashboard:conversation", args=[conv.pk])).content.decode()
    assert 'id="cc-take-call"' in page
    refused = client.post(
        reverse("dashboard:conversation", args=[conv.pk]), {"action": "take_call"}, follow=True
    )
    assert "not in the queue yet" in refused.content.decode()  # Twilio has not named the queue yet
    wait = twiml(signed_post(client, enqueue.get("waitUrl"), {"QueueSid": "QU" + "7" * 32, "QueueTime": "1"}))
    assert wait.find("Say").text == "Please stay on the line: a colleague will be with you in a moment."
    assert wait.find("Leave") is None

    client.post(reverse("dashboard:conversation", args=[conv.pk]), {"action": "take_call"})

    from agents.voice.providers.simulated import journal

    [asked] = [e for e in journal(call_sid) if e.get("request") == "queue_member_update"]
    bridge = twiml(signed_post(client, asked["url"], {}))
    assert bridge.find("Dial/Client").text == "oscar"
    signed_post(client, bridge.find("Dial").get("action"), {"DialCallStatus": "completed"})
    handoff_task.refresh_from_db()
    assert (handoff_task.status, handoff_task.result) == ("succeeded", {"outcome": "connected"})
    assert conv.events.filter(kind="handoff_taken", actor="operator:oscar").exists()


def test_console_queue_take_call_rings_the_taking_operators_phone(client, operators, handed_off, settings):
    """VOICE_HANDOFF_TRANSFER=console with an operator who has a phone: the caller waits in the
    queue, Take call in the console dequeues them to a <Dial><Number> of that phone (no softphone
    needed in production), and the dial's answer finishes the hand-off as connected."""
    settings.VOICE_HANDOFF_TRANSFER = "console"
    task, handoff_task, data = handed_off
    oscar = operators[1]
    services.operator_set_availability(user=oscar, available=True)
    operator = oscar.availability
    operator.phone = OPERATOR_PHONE
    operator.save()
    call_sid = "CA" + "6" * 32

    root = twiml(
        signed_post(client, links.connect_action_url(task.id), {"HandoffData": data, "CallSid": call_sid})
    )
    assert root.find("Dial") is None and root.find("Enqueue") is not None  # queued, not dialled
    signed_post(client, root.find("Enqueue").get("waitUrl"), {"QueueSid": "QU" + "8" * 32, "QueueTime": "1"})
    conv = Conversation.objects.get(channel="voice")
    client.force_login(oscar)
    client.post(reverse("dashboard:conversation", args=[conv.pk]), {"action": "take_call"})

    from agents.voice.providers.simulated import journal

    [asked] = [e for e in journal(call_sid) if e.get("request") == "queue_member_update"]
    assert OPERATOR_PHONE not in asked["url"]  # the number stays out of the URL Twilio keeps
    bridge = twiml(signed_post(client, asked["url"], {}))
    assert bridge.find("Dial/Client") is None
    assert bridge.find("Dial").text.strip() == OPERATOR_PHONE
    signed_post(client, bridge.find("Dial").get("action"), {"DialCallStatus": "completed"})
    handoff_task.refresh_from_db()
    assert (handoff_task.status, handoff_task.result) == ("succeeded", {"outcome": "connected"})


def test_a_queued_caller_nobody_takes_leaves_after_the_wait_and_a_callback_waits(
    client, operators, handed_off
):
    task, handoff_task, data = handed_off
    services.operator_set_availability(user=operators[1], available=True)
    root = twiml(
        signed_post(
            client, links.connect_action_url(task.id), {"HandoffData": data, "CallSid": "CA" + "6" * 32}
        )
    )
    enqueue = root.find("Enqueue")
    waited = str(settings.VOICE_HANDOFF_DIAL_SECONDS)

    wait = twiml(
        signed_post(client, enqueue.get("waitUrl"), {"QueueSid": "QU" + "8" * 32, "QueueTime": waited})
    )
    assert wait.find("Leave") is not None
    after = twiml(signed_post(client, enqueue.get("action"), {"QueueResult": "leave", "QueueTime": waited}))

    assert "call you back" in after.find("Say").text
    conv = Conversation.objects.get(channel="voice")
    assert conv.assignee is None and conv.labels.filter(name="callback").exists()
    handoff_task.refresh_from_db()
    assert (handoff_task.status, handoff_task.result) == ("succeeded", {"outcome": "callback"})
    client.force_login(operators[1])
    page = client.get(reverse("dashboard:conversation", args=[conv.pk])).content.decode()
    assert 'id="cc-take-call"' not in page  # nobody is waiting any more


@pytest.mark.parametrize("url", [links.handoff_wait_url, links.handoff_queue_url])
def test_the_queue_endpoints_refuse_unsigned_requests_and_answer_unknown_ids(client, handed_off, url):
    task, _handoff_task, _ = handed_off
    unsigned = client.post(url(task.id, "x").removeprefix(settings.PUBLIC_BASE_URL), {"QueueResult": "leave"})
    assert unsigned.status_code == 403
    signed = signed_post(client, url(task.id, "not-a-uuid"), {"QueueResult": "leave", "QueueTime": "1"})
    assert signed.status_code == 200 and twiml(signed).tag == "Response"


def test_a_bridge_for_a_call_nobody_took_is_the_callback_path(client, handed_off):
    task, handoff_task, _ = handed_off
    url = links.handoff_bridge_url(task.id, handoff_task.id, "mallory")
    assert client.post(url.removeprefix(settings.PUBLIC_BASE_URL), {}).status_code == 403
    root = twiml(signed_post(client, url, {}))
    assert root.find("Dial") is None and "call you back" in root.find("Say").text


def test_a_caller_who_hangs_up_while_the_operator_rings_leaves_a_callback(client, operators, handed_off):
    """Twilio asks no <Dial> action when the caller is gone: the call's final status callback
    finishes the open hand-off as a callback, so the task is final either way."""
    task, handoff_task, data = handed_off
    operator = services.operator_set_availability(user=operators[0], available=True)
    operator.phone = OPERATOR_PHONE
    operator.save()
    assert (
        twiml(signed_post(client, links.connect_action_url(task.id), {"HandoffData": data})).find("Dial")
        is not None
    )

    status_url = links.status_callback_url(task.id).split("#", 1)[0]
    signed_post(
        client, status_url, {"CallSid": "CA" + "3" * 32, "CallStatus": "completed", "CallDuration": "9"}
    )

    handoff_task.refresh_from_db()
    assert (handoff_task.status, handoff_task.result) == ("succeeded", {"outcome": "callback"})
    conv = Conversation.objects.get(channel="voice")
    assert (
        conv.assignee is None
        and conv.events.filter(kind="handoff_unanswered", details__dial_status="call-ended").exists()
    )
