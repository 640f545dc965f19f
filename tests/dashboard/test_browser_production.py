"""The console in headless Chromium, in the production layout of render.yaml.

- pages, API and webhooks from gunicorn (WSGI) on one hostname: ``localhost:<p1>``;
- websockets from uvicorn (ASGI) on another hostname: ``127.0.0.1:<p2>``. The admin's session
  cookie (set for ``localhost``) never reaches that host, exactly as on two ``*.onrender.com``
  services; the page gets a single-use ticket from the web host instead;
- the Redis channel layer, and a real Celery worker running the agents (simulated providers).

(``web.localhost`` / ``rt.localhost`` would read better, but only Chromium resolves those
names: the simulated Twilio in the worker, plain Python, must reach both hosts too.)

Every event under test is caused by a real action: a signed Twilio webhook POSTed to the web
host, a call through the simulated provider, a click in the page. No test publishes to the
channel layer. Each test saves screenshots under var/screenshots/.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
import requests
from django.conf import settings
from django.db import connections
from twilio.request_validator import RequestValidator
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from agents.voice.providers.simulated import hang_up_requested
from dashboard.live_auth import ticket_mint
from dossiers.models import Call, Contact, Message
from orchestrator.api.auth import api_key_create
from orchestrator.models import Task
from tests.support.services import (
    BIN,
    ROOT,
    celery_worker,
    free_port,
    platform_env,
    stop_process,
    unavailable,
    wait_for_port,
    wait_until,
)
from tests.support.services import transactional_db as _transactional_db

CHROMIUM = "/usr/bin/chromium"
SHOTS = ROOT / "var" / "screenshots"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]  # fmt: skip
PASSWORD = "pw-olivia-123"
HOLD_SECONDS = 45  # the simulated callee stays on the line this long: time to watch and hang up

pytestmark = [pytest.mark.browser, pytest.mark.services, pytest.mark.worker, _transactional_db]


class Layout:
    def __init__(self, web: str, rt: str, env: dict[str, str], logs: Path) -> None:
        self.web, self.rt, self.env, self.logs = web, rt, env, logs
        self.realtime: subprocess.Popen | None = None

    def start_realtime(self) -> None:
        """uvicorn serving the websockets, as bin/render-realtime does (ws pings every 20 s)."""
        port = self.rt.rsplit(":", 1)[1]
        with open(self.logs / "uvicorn.log", "a") as log:
            self.realtime = subprocess.Popen(
                [str(BIN / "uvicorn"), "comms_platform.asgi:application", "--host", "127.0.0.1", "--port", port,
                 "--no-access-log", "--ws-ping-interval", "20", "--ws-ping-timeout", "20"],
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        wait_for_port(int(port), timeout=60, proc=self.realtime)

    def stop_realtime(self) -> None:
        if self.realtime is not None:
            stop_process(self.realtime)
            self.realtime = None

    def signed_post(self, path: str, params: dict[str, str]) -> requests.Response:
        """POST to the web host as Twilio does: form-encoded, signed over the public URL."""
        url = f"{self.web}{path}"
        signature = RequestValidator(settings.TWILIO_AUTH_TOKEN).compute_signature(url, params)
        return requests.post(url, data=params, headers={"X-Twilio-Signature": signature}, timeout=10)

    def inbound_sms(self, from_: str, body: str) -> None:
        params = {"MessageSid": "SM" + os.urandom(16).hex(), "AccountSid": settings.TWILIO_ACCOUNT_SID,
                  "From": from_, "To": "+15005550006", "Body": body, "NumMedia": "0", "NumSegments": "1"}  # fmt: skip
        response = self.signed_post("/webhooks/twilio/messaging/inbound/", params)
        assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
def layout(django_db_setup, django_db_blocker):
    if not settings.REDIS_URL:
        unavailable("needs Redis (set REDIS_URL=redis://…) for the channel layer and the Celery broker")
    if not Path(CHROMIUM).exists():
        unavailable(f"needs Debian's chromium at {CHROMIUM} (apt-get install -y chromium)")
    web_port, rt_port = free_port(), free_port()
    web, rt = f"http://localhost:{web_port}", f"http://127.0.0.1:{rt_port}"
    with django_db_blocker.unblock():
        env = platform_env(
            REDIS_URL=settings.REDIS_URL, PUBLIC_BASE_URL=web, PUBLIC_WS_BASE_URL=rt.replace("http", "ws", 1),
            CSRF_TRUSTED_ORIGINS=web, ALLOWED_HOSTS="localhost,127.0.0.1",
            TWILIO_ACCOUNT_SID=settings.TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN=settings.TWILIO_AUTH_TOKEN,
            VOICE_SIMULATED_HOLD_SECONDS=str(HOLD_SECONDS), MESSAGING_SIMULATED_CALLBACK_DELAY="1.5",
            MESSAGING_RATE_PER_SECOND="0",
        )  # fmt: skip
    logs = Path(tempfile.mkdtemp(prefix="console-layout-"))
    layout = Layout(web, rt, env, logs)
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
        stack.enter_context(celery_worker(env, log_path=logs / "worker.log"))
        wait_for_port(web_port, timeout=60, proc=gunicorn)
        yield layout
    connections.close_all()


@pytest.fixture
def browser(monkeypatch):
    from playwright.sync_api import sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # the test's ORM calls between steps
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield chromium
        finally:
            chromium.close()
            connections.close_all()


@pytest.fixture
def olivia(django_user_model):
    return django_user_model.objects.create_user("olivia", "olivia@example.com", PASSWORD, is_staff=True,
                                                 is_superuser=True)  # fmt: skip


def signed_in_page(browser, layout: Layout, olivia):
    page = browser.new_context(viewport={"width": 1360, "height": 900}).new_page()
    page.set_default_timeout(20_000)
    sockets: list = []
    page.on("websocket", lambda socket: sockets.append(socket))
    page.goto(f"{layout.web}/admin/login/?next=/admin/")
    page.fill("#id_username", olivia.username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("nav.cc-nav")
    return page, sockets


def wait_live(page) -> None:
    page.wait_for_function("document.getElementById('cc-live-state').textContent === 'live'")


def mark_document(page) -> None:
    page.evaluate("window.__sameDocument = true")


def same_document(page) -> bool:
    return page.evaluate("window.__sameDocument === true")


def shot(page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"prod-{name}.png"), full_page=True)


# --- tests ------------------------------------------------------------------------------------------


def test_an_idle_inbox_socket_stays_up_60s_then_an_inbound_sms_appears(layout, browser, olivia):
    page, sockets = signed_in_page(browser, layout, olivia)
    page.goto(f"{layout.web}/admin/conversations/?folder=all")
    wait_live(page)
    mark_document(page)
    [socket] = [s for s in sockets if "/ws/inbox/" in s.url]
    # The socket is on the realtime host, opened with a ticket, not with the page's cookie.
    assert socket.url.startswith(layout.rt.replace("http", "ws", 1) + "/ws/inbox/?ticket=")
    time.sleep(60)  # idle: no message, no poll (the Redis layer used to drop it after ~5 s)
    assert not socket.is_closed() and len([s for s in sockets if "/ws/inbox/" in s.url]) == 1
    assert page.locator("#cc-live-state").inner_text() == "live"

    layout.inbound_sms("+14155550142", "Hello, my parcel has not arrived")  # Twilio → web host
    page.locator("#cc-conversations-table", has_text="Hello, my parcel has not arrived").wait_for(
        timeout=15_000
    )
    assert same_document(page)  # pushed into the open page, no reload
    assert not socket.is_closed()
    shot(page, "01-inbox-after-60s-idle")


def test_a_conversation_updates_live_new_message_claim_and_reply_status(
    layout, browser, olivia, django_user_model
):
    layout.inbound_sms("+14155550143", "Can I change the delivery address?")
    page, _ = signed_in_page(browser, layout, olivia)
    page.goto(f"{layout.web}/admin/conversations/?folder=all")
    page.locator("#cc-conversations-table tr", has_text="change the delivery address").get_by_role(
        "link", name="Open"
    ).click()
    wait_live(page)
    mark_document(page)
    layout.inbound_sms("+14155550143", "It is 10 Downing Street")  # a new message in the open conversation
    page.locator("#cc-thread .cc-in", has_text="It is 10 Downing Street").wait_for(timeout=15_000)
    assert same_document(page)

    with page.expect_navigation():
        page.click("#cc-claim")
    with page.expect_navigation():  # Release gives it back to the queue...
        page.get_by_role("button", name="Release").click()
    # One row per conversation, previewing the customer's latest words.
    page.locator("#cc-conversations-table tr", has_text="It is 10 Downing Street").get_by_text(
        "unassigned"
    ).wait_for()
    page.locator("#cc-conversations-table tr", has_text="It is 10 Downing Street").get_by_role(
        "link", name="Open"
    ).click()
    with page.expect_navigation():  # ...and Claim takes it again
        page.click("#cc-claim")
    wait_live(page)
    page.fill("#cc-reply", "Done: we deliver to 10 Downing Street.")
    with page.expect_navigation():
        page.click("#cc-send")
    wait_live(page)
    mark_document(page)  # the page the reply's redirect opened; from here on nothing reloads
    bubble = page.locator("#cc-thread .cc-out", has_text="Done: we deliver to 10 Downing Street.")
    bubble.wait_for()
    seen: list[str] = []
    for status in ("sent", "delivered"):  # the simulated Twilio's callbacks, 1.5 s apart
        page.wait_for_function(
            "([text, status]) => [...document.querySelectorAll('#cc-thread .cc-out')].some("
            "b => b.textContent.includes(text) && (b.querySelector('.cc-msg-status') || {}).textContent === status)",
            arg=["Done: we deliver to 10 Downing Street.", status], timeout=20_000,
        )  # fmt: skip
        seen.append(status)
        if status == "sent":
            shot(page, "02-reply-sent")
    assert same_document(page) and seen == ["sent", "delivered"]
    contact = Contact.objects.get(phone="+14155550143")
    reply = Message.objects.get(contact=contact, direction="outbound")
    assert reply.status == "delivered" and reply.body == "Done: we deliver to 10 Downing Street."
    shot(page, "03-reply-delivered")
    with page.expect_navigation():  # Resolve closes it and returns to the queue
        page.click("#cc-resolve")
    assert (
        "Resolved." in page.content()
        and "10 Downing Street" not in page.locator("#cc-conversations").inner_text()
    )


def test_a_call_appears_in_the_live_list_streams_its_turns_and_hang_up_ends_it(layout, browser, olivia):
    _, key = api_key_create(name="console-test")
    page, _ = signed_in_page(browser, layout, olivia)
    page.goto(f"{layout.web}/admin/calls/")
    wait_live(page)
    mark_document(page)
    response = requests.post(f"{layout.web}/api/calls/", headers={"Authorization": f"Api-Key {key}"}, timeout=10,
                             json={"to": "+14155550177", "goal": "confirm the delivery window",
                                   "greeting": "Hi, this is Acme."})  # fmt: skip
    assert response.status_code == 201, response.text
    task_id = response.json()["id"]
    row = page.locator(f"#cc-active-calls tr[data-task='{task_id}']")
    row.wait_for(timeout=20_000)  # pushed by the call task's transitions
    assert same_document(page)
    shot(page, "04-call-in-live-list")

    watcher = page.context.new_page()  # the list stays open in its own tab
    watcher.set_default_timeout(20_000)
    watcher.goto(f"{layout.web}/admin/calls/{task_id}/")
    wait_live(watcher)
    mark_document(watcher)
    # The greeting and the callee's first answer stream in (the callee then holds the line).
    watcher.locator("#cc-transcript .cc-turn.caller", has_text="Hello, who is calling?").wait_for(
        timeout=20_000
    )
    assert watcher.locator("#cc-transcript .cc-turn.agent").count() >= 1 and same_document(watcher)
    shot(watcher, "05-call-turns-streaming")

    watcher.once("dialog", lambda dialog: dialog.accept())  # "Hang up this call?"
    with watcher.expect_navigation():
        watcher.click("#cc-hangup")
    call = Call.objects.get(task_id=task_id)
    assert hang_up_requested(call.provider_sid)  # the simulated Twilio was asked to end the call
    wait_until(
        lambda: Task.objects.get(id=task_id).status == "cancelled", timeout=20, message="the final state"
    )
    task = Task.objects.get(id=task_id)
    assert task.error_code == "operator_hangup" and "hung up by operator:olivia" in task.error_message
    watcher.locator("#cc-call-status", has_text="cancelled").wait_for(timeout=20_000)
    shot(watcher, "06-call-hung-up")
    # And the call leaves the live list, still without a reload there.
    row.wait_for(state="detached", timeout=20_000)
    assert same_document(page)
    assert page.locator("#cc-recent-calls", has_text="cancelled").count() == 1
    shot(page, "07-call-left-live-list")
    call.refresh_from_db()
    assert call.status == "completed" and call.end_reason.startswith("operator_hangup")


def test_clicking_retry_on_a_failed_task_requeues_it(layout, browser, olivia):
    _, key = api_key_create(name="console-test")
    response = requests.post(f"{layout.web}/api/tasks/", headers={"Authorization": f"Api-Key {key}"}, timeout=10,
                             json={"type": "sms.send", "payload": {"to": "+14155550006", "body": "Your code"}})  # fmt: skip
    assert response.status_code == 201, response.text
    failed_id = response.json()["id"]  # +1 415 555 0006 is a landline to the simulated Twilio: 30006
    wait_until(
        lambda: Task.objects.get(id=failed_id).status == "failed", timeout=30, message="the send to fail"
    )
    page, _ = signed_in_page(browser, layout, olivia)
    page.goto(f"{layout.web}/admin/orchestrator/task/{failed_id}/change/")
    page.get_by_role("button", name="Retry").click()
    page.wait_for_url(lambda url: failed_id not in url and url.endswith("/change/"))
    new = Task.objects.get(parent_id=failed_id)
    assert str(new.id) in page.url and "Retried as a new task" in page.content()
    # Re-queued: the worker takes it through the same path again.
    wait_until(lambda: Task.objects.get(id=new.id).status not in ("pending", "routed"), timeout=30,
               message="the retry to be queued")  # fmt: skip
    assert Task.objects.get(id=failed_id).status == "failed"  # the old task keeps its history
    shot(page, "08-task-retried")


OPEN_JS = """async (url) => await new Promise((resolve) => {
  const ws = new WebSocket(url);
  ws.onopen = () => { ws.close(); resolve("open"); };
  ws.onclose = (ev) => resolve("refused " + ev.code);
})"""


def test_the_realtime_host_refuses_sockets_without_a_valid_ticket(layout, browser, olivia):
    ws = layout.rt.replace("http", "ws", 1) + "/ws/inbox/"
    page, _ = signed_in_page(browser, layout, olivia)
    page.goto(f"{layout.web}/admin/")
    ticket_url = page.evaluate(
        "fetch('/admin/live/ticket/?path=/ws/inbox/').then(r => r.json()).then(j => j.url)"
    )
    outcomes = {
        "no credential": page.evaluate(OPEN_JS, ws),
        "forged credential": page.evaluate(OPEN_JS, ws + "?ticket=not-a-ticket"),
        "valid ticket": page.evaluate(OPEN_JS, ticket_url),
        "replayed ticket": page.evaluate(OPEN_JS, ticket_url),
    }
    # A page of another origin (here the realtime host itself) with a ticket minted for the console.
    other = browser.new_page()
    other.goto(f"{layout.rt}/healthz")
    stolen = f"{ws}?ticket={ticket_mint(user=olivia, path='/ws/inbox/', origin=layout.web)}"
    outcomes["wrong origin"] = other.evaluate(OPEN_JS, stolen)
    page.set_content("<pre id=r></pre>")
    page.locator("#r").evaluate("(el, o) => el.textContent = JSON.stringify(o, null, 2)", outcomes)
    shot(page, "09-socket-refusals")
    assert outcomes == {"no credential": "refused 1006", "forged credential": "refused 1006",
                        "valid ticket": "open", "replayed ticket": "refused 1006", "wrong origin": "refused 1006"}  # fmt: skip
    # 1006 is all a browser sees of a refused handshake; the server answered 403 and says why.
    for query, origin in (("", layout.web), (stolen.split("?", 1)[1], "https://evil.example.net")):
        with pytest.raises(InvalidStatus) as refused:
            connect(f"{ws}?{query}", additional_headers={"Origin": origin}, open_timeout=5)
        assert refused.value.response.status_code == 403
    log = (layout.logs / "uvicorn.log").read_text()
    assert "ticket already used" in log and "origin does not match" in log and "no ticket" in log


def test_after_a_realtime_outage_the_page_reconnects_and_catches_up(layout, browser, olivia):
    page, sockets = signed_in_page(browser, layout, olivia)
    page.goto(f"{layout.web}/admin/conversations/?folder=all")
    wait_live(page)
    mark_document(page)
    layout.stop_realtime()  # the realtime service goes away (a deploy, a crash)
    page.wait_for_function("document.getElementById('cc-live-state').textContent === 'reconnecting…'")
    layout.inbound_sms("+14155550188", "Sent while the live service was down")  # nobody is listening
    shot(page, "10-realtime-down")
    time.sleep(3)
    assert "Sent while the live service was down" not in page.locator("#cc-conversations").inner_text()
    layout.start_realtime()
    # Back-off retries find it again; on reopening, the page fetches what it missed.
    page.locator("#cc-conversations-table", has_text="Sent while the live service was down").wait_for(
        timeout=45_000
    )
    wait_live(page)
    assert same_document(page) and len([s for s in sockets if "/ws/inbox/" in s.url]) >= 2
    layout.inbound_sms("+14155550189", "And this one after it came back")  # pushed again
    page.locator("#cc-conversations-table", has_text="And this one after it came back").wait_for(
        timeout=15_000
    )
    shot(page, "11-realtime-back-caught-up")
