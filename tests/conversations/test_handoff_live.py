"""Voice hand-off end to end, in the production layout: gunicorn (API, webhooks, console),
uvicorn (the ConversationRelay websocket), Redis and a real Celery worker running the voice
agent with the simulated Twilio.

``POST /api/calls/`` to a number ending in 4357: the simulated callee says "I want to speak to a
person" as a ConversationRelay ``prompt`` over the relay websocket; the deterministic agent calls
``transfer_to_human``; Twilio (simulated) asks the <Connect> action and follows our TwiML — it
dials the operator's phone and plays the operator's leg, or waits in the hand-off's queue until
the operator clicks *Take call* in the console. What the simulated Twilio was asked is read from
its journal."""

from __future__ import annotations

import re
import subprocess
import tempfile
from contextlib import ExitStack
from pathlib import Path
from xml.etree import ElementTree

import pytest
import requests
from django.conf import settings
from django.db import connections

from agents.voice.providers.simulated import journal
from conversations import services
from conversations.models import Conversation
from orchestrator.api.auth import api_key_create
from orchestrator.heartbeats import KEY as HEARTBEAT_KEY
from orchestrator.models import Task
from tests.dashboard import test_browser_production as prod
from tests.support.services import (
    BIN,
    ROOT,
    celery_worker,
    free_port,
    platform_env,
    stop_process,
    transactional_db,
    unavailable,
    wait_for_port,
    wait_until,
)

pytestmark = [pytest.mark.services, pytest.mark.worker, transactional_db]
CALLER = "+14155554357"  # the simulated callee asks for a person (…4357, H-E-L-P)
OPERATOR_PHONE = "+14155550999"
WAIT_SECONDS = 4
# The layout's Redis (the tests of this directory run with settings.REDIS_URL emptied).
LAYOUT_REDIS = settings.REDIS_URL  # VOICE_HANDOFF_DIAL_SECONDS in the layout: the console queue's wait


@pytest.fixture(scope="module")
def layout(django_db_setup, django_db_blocker):
    if not settings.REDIS_URL:
        unavailable("needs Redis (set REDIS_URL=redis://…) for the channel layer and the Celery broker")

    web_port, rt_port = free_port(), free_port()
    web, rt = f"http://localhost:{web_port}", f"http://127.0.0.1:{rt_port}"
    with django_db_blocker.unblock():
        env = platform_env(
            REDIS_URL=settings.REDIS_URL, PUBLIC_BASE_URL=web, PUBLIC_WS_BASE_URL=rt.replace("http", "ws", 1),
            CSRF_TRUSTED_ORIGINS=web, ALLOWED_HOSTS="localhost,127.0.0.1", SECRET_KEY=settings.SECRET_KEY,
            TWILIO_ACCOUNT_SID=settings.TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN=settings.TWILIO_AUTH_TOKEN,
            VOICE_HANDOFF_DIAL_SECONDS=str(WAIT_SECONDS), MESSAGING_RATE_PER_SECOND="0",
        )  # fmt: skip
    logs = Path(tempfile.mkdtemp(prefix="handoff-layout-"))
    layout = prod.Layout(web, rt, env, logs)
    with ExitStack() as stack:
        web_log = stack.enter_context(open(logs / "gunicorn.log", "w"))
        gunicorn = subprocess.Popen(
            [str(BIN / "gunicorn"), "comms_platform.wsgi:application", "-b", f"127.0.0.1:{web_port}", "-w", "1",
             "--worker-class", "gthread", "--threads", "8", "--timeout", "60"],
            cwd=ROOT, env=env, stdout=web_log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        stack.callback(stop_process, gunicorn)
        layout.start_realtime()
        stack.callback(layout.stop_realtime)
        stack.enter_context(celery_worker(env, queues="orchestrator,voice", log_path=logs / "worker.log"))
        wait_for_port(web_port, timeout=60, proc=gunicorn)
        yield layout
    connections.close_all()


def voice_beat_is_fresh(redis_url: str) -> bool:
    """The voice agent's heartbeat in the layout's Redis is recent (read with a client of our
    own: the orchestrator's cached one may point at another test's Redis)."""
    import time

    import redis

    beat = redis.Redis.from_url(redis_url, socket_timeout=2).get(HEARTBEAT_KEY.format(agent="voice"))
    return bool(beat) and time.time() - float(beat) <= settings.HEARTBEAT_STALE_SECONDS


def place_call(layout) -> str:
    # A call placed before the worker's heartbeat would wait for the sweeper: a previous worker's
    # beat left in Redis is stale, so the voice agent counts as unhealthy (and the worker beats
    # only once this test's database has the agent registry back).
    wait_until(
        lambda: voice_beat_is_fresh(layout.env["REDIS_URL"]), timeout=30, message="the worker's heartbeat"
    )
    _, key = api_key_create(name="handoff-e2e")
    response = requests.post(f"{layout.web}/api/calls/", headers={"Authorization": f"Api-Key {key}"}, timeout=10,
                             json={"to": CALLER, "goal": "confirming the delivery window",
                                   "greeting": "Hi, this is Acme."})  # fmt: skip
    assert response.status_code == 201, response.text
    return response.json()["id"]


def the_handoff(call_task_id: str) -> Task:
    """The call's hand-off task, once it is final."""
    task = wait_until(lambda: Task.objects.filter(parent_id=call_task_id, type="call.handoff").first(),
                      timeout=30, message="the call.handoff task")  # fmt: skip
    wait_until(lambda: Task.objects.get(pk=task.pk).status in ("succeeded", "failed"), timeout=30,
               message="the hand-off's final state")  # fmt: skip
    return Task.objects.get(pk=task.pk)


def twiml_answers(call_task_id: str) -> list[ElementTree.Element]:
    sid = wait_until(lambda: Task.objects.get(pk=call_task_id).provider_id, message="the call SID")
    return [ElementTree.fromstring(e["twiml"]) for e in journal(sid, redis_url=LAYOUT_REDIS) if "twiml" in e]  # noqa: S314


def signed_in(layout, user, password: str) -> requests.Session:
    """An operator's browser session on the web host (the admin login form, CSRF and all)."""
    session = requests.Session()
    page = session.get(f"{layout.web}/admin/login/", timeout=10).text
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    response = session.post(f"{layout.web}/admin/login/?next=/admin/", timeout=10, headers={"Origin": layout.web},
                            data={"username": user.username, "password": password, "csrfmiddlewaretoken": token})  # fmt: skip
    assert response.ok and "sessionid" in session.cookies
    return session


def post_action(session: requests.Session, layout, conv: Conversation, action: str) -> requests.Response:
    url = f"{layout.web}/admin/conversations/{conv.pk}/"
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', session.get(url, timeout=10).text).group(
        1
    )
    return session.post(url, data={"action": action, "csrfmiddlewaretoken": token}, timeout=10,
                        headers={"Origin": layout.web, "Referer": url})  # fmt: skip


def available(user, *, phone: str = "", capacity: int = 5) -> None:
    operator = services.operator_set_availability(user=user, available=True, capacity=capacity)
    operator.phone = phone
    operator.save()


def test_the_caller_asks_for_a_person_and_ends_at_the_operators_phone(layout, operators):
    olivia = operators[0]
    available(olivia, phone=OPERATOR_PHONE)

    call_task_id = place_call(layout)
    handoff = the_handoff(call_task_id)

    assert (handoff.status, handoff.result) == ("succeeded", {"outcome": "connected"})
    answers = twiml_answers(call_task_id)
    dial = next(a.find("Dial") for a in answers if a.find("Dial") is not None)
    assert dial.text == OPERATOR_PHONE  # the transfer the simulated Twilio was asked to make
    assert dial.get("timeout") == str(WAIT_SECONDS)
    conv = Conversation.objects.get(contact__phone=CALLER, channel="voice")
    assert conv.assignee == olivia
    assert conv.events.filter(kind="handoff_connected").exists()
    # The operator's console: the AI's summary and the transcript of the call.
    session = signed_in(layout, olivia, "pw-olivia-123")
    page = session.get(f"{layout.web}/admin/conversations/{conv.pk}/", timeout=10).text
    panel = page.split('id="cc-handoff"')[1].split("</section>")[0]
    assert "AI summary:</strong> I want to speak to a person" in panel
    assert "Of course, let me connect you with a colleague." in panel  # the agent's turn, from the transcript


def test_with_nobody_available_the_caller_hears_the_message_and_a_callback_waits(layout, operators):
    services.operator_set_availability(user=operators[0], available=False)

    call_task_id = place_call(layout)
    handoff = the_handoff(call_task_id)

    assert (handoff.status, handoff.result) == ("succeeded", {"outcome": "callback"})
    # The <Connect> action's answer (journaled once the simulated Twilio has read it).
    [after] = wait_until(lambda: twiml_answers(call_task_id), message="the simulated Twilio's journal")
    assert after.find("Dial") is None and "call you back" in after.find("Say").text
    assert after.find("Hangup") is not None
    conv = Conversation.objects.get(contact__phone=CALLER, channel="voice")
    assert conv.assignee is None and conv.status == "open"
    assert list(conv.labels.values_list("name", flat=True)) == ["callback"]


def test_an_operator_without_a_phone_takes_the_call_from_the_console_queue(layout, operators):
    oscar = operators[1]
    available(oscar)  # no phone: the console queue

    call_task_id = place_call(layout)
    conv = wait_until(lambda: Conversation.objects.filter(contact__phone=CALLER, channel="voice",
                                                          events__kind="handoff_queued").first(),
                      timeout=30, message="the queued hand-off")  # fmt: skip
    assert conv.assignee == oscar
    session = signed_in(layout, oscar, "pw-oscar-123")
    page = session.get(f"{layout.web}/admin/conversations/{conv.pk}/", timeout=10).text
    assert 'id="cc-take-call"' in page and "I want to speak to a person" in page
    handoff = Task.objects.get(parent_id=call_task_id, type="call.handoff")
    wait_until(lambda: any(a.find("Pause") is not None for a in twiml_answers(call_task_id)), timeout=10,
               message="the caller on hold (the wait URL asked)")  # fmt: skip

    response = post_action(session, layout, conv, "take_call")  # Oscar clicks Take call

    assert response.ok and "Putting the caller through to you." in response.text
    handoff = the_handoff(call_task_id)
    assert (handoff.status, handoff.result) == ("succeeded", {"outcome": "connected"})
    sid = Task.objects.get(pk=call_task_id).provider_id
    entries = journal(sid, redis_url=LAYOUT_REDIS)
    enqueue = next(ElementTree.fromstring(e["twiml"]).find("Enqueue") for e in entries  # noqa: S314
                   if "twiml" in e and "<Enqueue" in e["twiml"])  # fmt: skip
    assert enqueue.text == f"handoff-{handoff.pk}" and "/handoff-wait/" in enqueue.get("waitUrl")
    [dequeue] = [e for e in entries if e.get("request") == "queue_member_update"]
    assert "/handoff-bridge/" in dequeue["url"] and "operator=oscar" in dequeue["url"]
    [bridge_twiml] = [e["twiml"] for e in entries if e.get("url") == dequeue["url"] and "twiml" in e]
    bridge = ElementTree.fromstring(bridge_twiml)  # noqa: S314 (our own TwiML)
    assert bridge.find("Dial/Client").text == "oscar"  # the operator's client leg
    assert not Conversation.objects.get(pk=conv.pk).labels.exists()


def test_nobody_takes_the_queued_call_in_time_so_a_callback_waits(layout, operators):
    available(operators[2])  # Otto: no phone, never clicks

    call_task_id = place_call(layout)
    handoff = the_handoff(call_task_id)

    assert (handoff.status, handoff.result) == ("succeeded", {"outcome": "callback"})
    answers = wait_until(lambda: [a for a in twiml_answers(call_task_id) if a.find("Say") is not None
                                  and "call you back" in a.find("Say").text] and twiml_answers(call_task_id),
                         message="the callback message in the journal")  # fmt: skip
    assert any(a.find("Leave") is not None for a in answers)  # the wait ran out
    assert "call you back" in answers[-1].find("Say").text
    conv = Conversation.objects.get(contact__phone=CALLER, channel="voice")
    assert conv.assignee is None and conv.labels.filter(name="callback").exists()
    assert conv.events.filter(kind="handoff_unanswered", details__dial_status="queue-leave").exists()
